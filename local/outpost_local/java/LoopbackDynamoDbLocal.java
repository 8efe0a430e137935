// DynamoDB Local bound to one address. Its own ServerRunner has no -host option and Jetty's
// Server(int port) listens on every interface; this launcher builds the server from the same
// command line, binds the connector to the address given first, then starts it.
//
// Usage: java -cp DynamoDBLocal.jar:<this dir> -Djava.library.path=DynamoDBLocal_lib \
//            LoopbackDynamoDbLocal 127.0.0.1 -inMemory -port 8000 -disableTelemetry
import com.amazonaws.services.dynamodbv2.local.main.ServerRunner;
import com.amazonaws.services.dynamodbv2.local.server.DynamoDBProxyServer;
import java.lang.reflect.Field;
import java.util.Arrays;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;

public final class LoopbackDynamoDbLocal {
    private LoopbackDynamoDbLocal() {}

    public static void main(String[] args) throws Exception {
        String host = args[0];
        DynamoDBProxyServer proxy =
                ServerRunner.createServerFromCommandLineArgs(Arrays.copyOfRange(args, 1, args.length));
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        Server server = (Server) field.get(proxy);
        for (Connector connector : server.getConnectors()) {
            ((ServerConnector) connector).setHost(host);
        }
        proxy.start();
        System.out.println("LISTENING " + host);
        System.out.flush();
        proxy.join();
    }
}
