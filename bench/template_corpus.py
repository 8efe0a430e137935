"""A realistic transactional template, for bench/templates_batch.py and the template tests.

The shape r14b measured at ~70 ms a message (issue 14's note): about 36 KB of table-based HTML
as email builders write it (nested tables, a class on most cells, links, images with alt text),
120 CSS rules in one <style> (classes, ids, tag and descendant selectors, one @media block),
and a 10-item loop (an order's lines), with variables in text, in attribute values (href,
alt) and in the subject. No imports beyond the standard library: the tests load this file.
"""

from __future__ import annotations

from typing import Any

SUBJECT = "Your order {{order_id}} has shipped, {{first_name}}"


def _css() -> str:
    rules = [
        "body { margin: 0; padding: 0; background: #f4f4f7; font-family: Helvetica, Arial, sans-serif }",
        "table { border-collapse: collapse }",
        "td { vertical-align: top }",
        "a { color: #3869d4 }",
        "img { border: 0; max-width: 100% }",
        "h1 { font-size: 22px; font-weight: bold; margin: 0 0 12px }",
        "h2 { font-size: 18px; margin: 0 0 8px }",
        "p { margin: 0 0 12px; line-height: 1.5 }",
        "#header { background: #2f3133; color: #ffffff }",
        "#footer { color: #a8aaaf; font-size: 12px }",
        ".wrapper td.cell { padding: 4px 8px }",
        ".items tr td { border-bottom: 1px solid #eaeaec }",
    ]
    for i in range(100):
        rules.append(f".c{i} {{ color: #{(i * 2654435761) % 0xFFFFFF:06x}; padding: {i % 9}px {i % 5}px; "
                     f"font-size: {11 + i % 7}px }}")
    rules += [f"h{k} span.t{k} {{ letter-spacing: {k / 10}px }}" for k in range(1, 7)]
    rules.append("@media only screen and (max-width: 600px) { .wrapper { width: 100% !important } "
                 ".c1 { display: block !important } }")
    return "<style>\n" + "\n".join(rules) + "\n</style>"


def _block(i: int) -> str:
    c = f"c{i % 100}"
    return (f'<tr><td class="cell {c}"><table class="inner" width="100%"><tr>'
            f'<td class="{c}"><h2><span class="t2">Section {i}</span></h2>'
            f'<p class="c{(i + 7) % 100}">We packed your order with care. This paragraph is part of the '
            f"template's long body, as a real newsletter or receipt has: terms, help, and links.</p>"
            f'<p><a class="c{(i + 3) % 100}" href="https://shop.example.com/help/{i}?u={{{{user_id}}}}">'
            f"Help with section {i}</a> &middot; <img src=\"https://cdn.example.com/i/{i}.png\" "
            f'alt="Icon {i}" width="16" height="16"></p></td></tr></table></td></tr>\n')


def _items() -> str:
    return ('<table class="items" width="100%">{{#items}}<tr><td class="c10">'
            '<img src="{{image}}" alt="{{name}}" width="48"></td><td class="c11">{{name}}<br>'
            '<span class="c12">Qty {{qty}}</span></td><td class="c13" align="right">{{price}}</td>'
            "</tr>{{/items}}</table>")


def realistic_html() -> str:
    """About 36 KB of HTML with 120 CSS rules and a 10-item loop."""
    head = f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Order</title>{_css()}</head>'
    top = ('<body><table class="wrapper" width="100%"><tr><td id="header" class="cell">'
           '<h1><span class="t1">Hi {{first_name}},</span></h1><p>Order <b>{{order_id}}</b> is on its way. '
           'Track it <a href="{{tracking_url}}">here</a>.</p></td></tr>\n'
           f"<tr><td class=\"cell\">{_items()}</td></tr>\n")
    body = "".join(_block(i) for i in range(58))
    foot = ('<tr><td id="footer" class="cell"><p>{{#coupon}}Your next order: <b>{{code}}</b>{{/coupon}}'
            "{{^coupon}}Thank you for shopping with us.{{/coupon}}</p><p>Shop Inc., 1 Main St.</p>"
            '<p><a href="https://shop.example.com/unsubscribe?u={{user_id}}">Unsubscribe</a></p>'
            "</td></tr></table></body></html>")
    return head + top + body + foot


def realistic_variables(i: int) -> dict[str, Any]:
    """One recipient's variables: a name, ids, a tracking URL, 10 order lines, sometimes a coupon."""
    return {"first_name": f"User{i}", "order_id": f"A{i:08d}", "user_id": i,
            "tracking_url": f"https://track.example.com/p/{i:010d}?c=a&d=<b>",
            "items": [{"name": f"Item {k} & co. \"{i}\"", "qty": k + 1, "price": f"${(k + 1) * 3.5:.2f}",
                       "image": f"https://cdn.example.com/p/{i}-{k}.jpg"} for k in range(10)],
            **({"coupon": {"code": f"SAVE{i % 97}"}} if i % 3 == 0 else {})}
