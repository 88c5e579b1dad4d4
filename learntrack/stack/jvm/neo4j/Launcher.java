// Launcher.java - embedded Neo4j 5.26 Community DBMS with Bolt on 127.0.0.1.
// LearnTrack's local graph server: `learntrack stack up` runs it (stack/servers.py,
// GraphServer) with the jars mvn resolved from the pom beside this file.
//
// Run (Java 17 single-file source launch):
//   NEO4J_HOME_DIR=/path/to/home NEO4J_BOLT_PORT=7687 NEO4J_PASSWORD=... \
//     java -Xms512m -Xmx512m -cp 'LIBDIR/*' Launcher.java [--home=DIR] [--port=N]
//
// The password is read ONLY from the environment variable NEO4J_PASSWORD.
// Prints exactly one readiness line to stdout:
//   learntrack-neo4j: ready bolt=127.0.0.1:PORT
// SIGTERM / SIGINT: managementService.shutdown(), then exit status 0.

import java.io.DataInputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.graphdb.Label;
import org.neo4j.graphdb.Node;
import org.neo4j.graphdb.Transaction;

public class Launcher {
    private static final String TAG = "learntrack-neo4j";
    private static final String HOST = "127.0.0.1";

    private static volatile DatabaseManagementService dbms;
    private static final AtomicBoolean stopped = new AtomicBoolean(false);

    public static void main(String[] args) throws Exception {
        String home = System.getenv("NEO4J_HOME_DIR");
        String portStr = System.getenv("NEO4J_BOLT_PORT");
        for (String a : args) {
            if (a.startsWith("--home=")) home = a.substring(7);
            else if (a.startsWith("--port=")) portStr = a.substring(7);
            else if (a.startsWith("--password")) die("the password must come from env NEO4J_PASSWORD, not the command line");
            else die("unknown argument: " + a + " (use --home=DIR --port=N)");
        }
        if (home == null || home.isBlank()) die("set NEO4J_HOME_DIR or --home=DIR");
        int port = 7687;
        if (portStr != null && !portStr.isBlank()) {
            try { port = Integer.parseInt(portStr.trim()); } catch (NumberFormatException e) { die("bad port: " + portStr); }
        }
        String password = System.getenv("NEO4J_PASSWORD");
        if (password == null || password.length() < 8) die("env NEO4J_PASSWORD must be set (at least 8 characters)");

        Path homeDir = Path.of(home).toAbsolutePath().normalize();
        Files.createDirectories(homeDir);

        // Keep Neo4j's own chatter (and any stray System.out from libraries) off stdout:
        // our stdout carries only the readiness line. Neo4j writes debug.log (+ empty query/security/http logs) under HOME/logs.
        PrintStream realOut = System.out;
        System.setOut(System.err);

        // SIGTERM/SIGINT -> exit(0); the shutdown hook below then stops the DBMS cleanly.
        // (Without a handler the JVM would still run the hook but exit with status 143.)
        for (String sig : new String[] {"TERM", "INT"}) {
            try {
                sun.misc.Signal.handle(new sun.misc.Signal(sig), s -> System.exit(0));
            } catch (Throwable t) {
                System.err.println(TAG + ": could not install SIG" + sig + " handler: " + t);
            }
        }
        Runtime.getRuntime().addShutdownHook(new Thread(Launcher::stop, "neo4j-shutdown"));

        long t0 = System.nanoTime();
        if (System.getenv("LAUNCHER_TRACE") != null) System.err.println(TAG + ": main() entered at JVM uptime "
                + java.lang.management.ManagementFactory.getRuntimeMXBean().getUptime() + " ms (includes in-memory compile)");
        try {
            // Fresh home: seed the neo4j user's password BEFORE the DBMS (and Bolt) starts, exactly like
            // `neo4j-admin dbms set-initial-password`, so there is no window in which Bolt is up while the
            // user still has the default password "neo4j" (change required).
            if (!Files.exists(homeDir.resolve("data/databases/system"))) seedInitialPassword(homeDir, password);

            dbms = new DatabaseManagementServiceBuilder(homeDir).setConfig(settings(homeDir, port)).build();
            phase("dbms built", t0);

            // Wait for the system and default databases.
            GraphDatabaseService system = dbms.database("system");
            if (!system.isAvailable(Duration.ofMinutes(2).toMillis())) throw new IllegalStateException("system database not available");
            phase("system available", t0);
            setPassword(system, password);
            phase("password", t0);
            // The seed file is only read when the system database is created; don't leave the hash lying around.
            Files.deleteIfExists(homeDir.resolve("data/dbms/auth.ini"));
            GraphDatabaseService neo4j = dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME);
            if (!neo4j.isAvailable(Duration.ofMinutes(2).toMillis())) throw new IllegalStateException("default database not available");

            // Bolt readiness: a real Bolt handshake against our listen address.
            phase("default db available", t0);
            boltHandshake(HOST, port, Duration.ofSeconds(30));
            phase("bolt handshake ok", t0);
        } catch (Throwable t) {
            System.err.println(TAG + ": startup failed: " + t);
            t.printStackTrace(System.err);
            System.exit(1); // shutdown hook stops whatever started
        }
        long ms = (System.nanoTime() - t0) / 1_000_000;
        System.err.println(TAG + ": dbms started in " + ms + " ms, home=" + homeDir);
        realOut.println(TAG + ": ready bolt=" + HOST + ":" + port);
        realOut.flush();

        new CountDownLatch(1).await(); // park; exit happens via signal -> System.exit(0)
    }

    private static Map<org.neo4j.graphdb.config.Setting<?>, Object> settings(Path home, int port) {
        SocketAddress bolt = new SocketAddress(HOST, port);
        return Map.ofEntries(
                // --- network: Bolt only, loopback only, no TLS (loopback), HTTP/HTTPS off
                Map.entry(GraphDatabaseSettings.default_listen_address, new SocketAddress(HOST)),
                Map.entry(GraphDatabaseSettings.default_advertised_address, new SocketAddress(HOST)),
                Map.entry(BoltConnector.enabled, true),
                Map.entry(BoltConnector.listen_address, bolt),
                Map.entry(BoltConnector.advertised_address, bolt),
                Map.entry(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED),
                Map.entry(BoltConnector.thread_pool_max_size, 50),
                Map.entry(HttpConnector.enabled, false),
                // Bolt's netty event loops default to a 5 s quiet period (x2 groups): ~10 s extra on every stop.
                Map.entry(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0),
                Map.entry(GraphDatabaseInternalSettings.netty_server_shutdown_timeout, Duration.ofSeconds(5)),
                Map.entry(HttpsConnector.enabled, false),
                // --- security
                Map.entry(GraphDatabaseSettings.auth_enabled, true),
                // --- memory: small page cache (off-heap) and bounded transaction memory (on-heap by default)
                Map.entry(GraphDatabaseSettings.pagecache_memory, pagecacheBytes()),
                Map.entry(GraphDatabaseSettings.memory_transaction_global_max_size, 256L * 1024 * 1024),
                Map.entry(GraphDatabaseSettings.memory_transaction_max_size, 128L * 1024 * 1024),
                Map.entry(GraphDatabaseSettings.transaction_timeout, Duration.ofMinutes(10)),
                // --- telemetry / usage data collection off
                Map.entry(GraphDatabaseSettings.udc_enabled, false),
                Map.entry(BoltConnector.server_bolt_telemetry_enabled, false),
                // --- disk: keep transaction logs small for a dev/CI box
                Map.entry(GraphDatabaseSettings.keep_logical_logs, "100M size"),
                Map.entry(GraphDatabaseSettings.logical_log_rotation_threshold, 32L * 1024 * 1024),
                // --- logs under HOME/logs (explicit, though it is the default relative to the home)
                Map.entry(GraphDatabaseSettings.logs_directory, home.resolve("logs")));
    }

    /** NEO4J_PAGECACHE ("128m", "1g", or bytes); default 128 MiB. */
    private static long pagecacheBytes() {
        String v = System.getenv("NEO4J_PAGECACHE");
        if (v == null || v.isBlank()) return 128L * 1024 * 1024;
        v = v.trim().toLowerCase();
        long unit = 1;
        char last = v.charAt(v.length() - 1);
        if (last == 'k') unit = 1024L;
        else if (last == 'm') unit = 1024L * 1024;
        else if (last == 'g') unit = 1024L * 1024 * 1024;
        if (unit != 1) v = v.substring(0, v.length() - 1);
        try {
            return Long.parseLong(v) * unit;
        } catch (NumberFormatException e) {
            die("bad NEO4J_PAGECACHE: " + System.getenv("NEO4J_PAGECACHE"));
            return 0;
        }
    }

    /** Writes HOME/data/dbms/auth.ini (hashed) via Neo4j's own SetInitialPasswordCommand (in-process, not argv). */
    private static void seedInitialPassword(Path home, String password) {
        var ctx = new org.neo4j.cli.ExecutionContext(home, home.resolve("conf"), System.err, System.err,
                new org.neo4j.io.fs.DefaultFileSystemAbstraction());
        var cmd = new org.neo4j.commandline.admin.security.SetInitialPasswordCommand(ctx);
        int rc = new picocli.CommandLine(cmd).execute(password);
        if (rc != 0) throw new IllegalStateException("set-initial-password failed, exit code " + rc);
    }

    /** Set neo4j's password from env, without "change required". Idempotent across restarts. */
    private static void setPassword(GraphDatabaseService system, String password) {
        // Fast path (no Cypher, ~ms instead of ~3 s of cold query planning): compare with the stored hash.
        if (passwordAlreadyCurrent(system, password)) {
            System.err.println(TAG + ": password of user neo4j unchanged (already set)");
            return;
        }
        try {
            system.executeTransactionally(
                    "ALTER USER neo4j SET PASSWORD $pw CHANGE NOT REQUIRED", Map.of("pw", password));
            System.err.println(TAG + ": password of user neo4j set from NEO4J_PASSWORD");
        } catch (RuntimeException e) {
            String msg = String.valueOf(e.getMessage());
            if (!msg.contains("cannot be the same")) throw e;
            // Same password already stored: still make sure no change is required.
            system.executeTransactionally("ALTER USER neo4j SET PASSWORD CHANGE NOT REQUIRED");
            System.err.println(TAG + ": password of user neo4j unchanged, change-required flag cleared");
        }
    }

    /** Read-only check of the system graph: (:User {name:'neo4j'}) has this password and no change required. */
    private static boolean passwordAlreadyCurrent(GraphDatabaseService system, String password) {
        try (Transaction tx = system.beginTx()) {
            Node user = tx.findNode(Label.label("User"), "name", "neo4j");
            if (user == null) return false;
            Object cred = user.getProperty("credentials", null);
            Object changeRequired = user.getProperty("passwordChangeRequired", Boolean.TRUE);
            if (!(cred instanceof String) || !Boolean.FALSE.equals(changeRequired)) return false;
            return org.neo4j.server.security.SystemGraphCredential
                    .deserialize((String) cred, new org.neo4j.server.security.SecureHasher())
                    .matchesPassword(password.getBytes(StandardCharsets.UTF_8));
        } catch (Exception e) {
            System.err.println(TAG + ": password fast check unavailable (" + e + "), using ALTER USER");
            return false;
        }
    }

    /** Bolt handshake: magic 0x6060B017 + 4 proposals; the server answers with a 4-byte version. */
    private static void boltHandshake(String host, int port, Duration timeout) throws Exception {
        long deadline = System.nanoTime() + timeout.toNanos();
        Exception last = null;
        while (System.nanoTime() < deadline) {
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress(host, port), 2000);
                s.setSoTimeout(5000);
                OutputStream out = s.getOutputStream();
                out.write(new byte[] {
                    0x60, 0x60, (byte) 0xB0, 0x17,
                    0, 8, 8, 5,   // 5.8 down to 5.0 (range 8)
                    0, 0, 0, 4,   // 4.4
                    0, 0, 0, 0, 0, 0, 0, 0});
                out.flush();
                byte[] v = new byte[4];
                new DataInputStream(s.getInputStream()).readFully(v);
                if (v[3] != 0) return; // agreed on a version
                last = new IllegalStateException("server rejected all Bolt versions");
            } catch (Exception e) {
                last = e;
            }
            Thread.sleep(200);
        }
        throw new IllegalStateException("Bolt not accepting on " + host + ":" + port, last);
    }

    private static void stop() {
        if (!stopped.compareAndSet(false, true)) return;
        DatabaseManagementService d = dbms;
        if (d == null) return;
        long t0 = System.nanoTime();
        System.err.println(TAG + ": shutting down");
        try {
            d.shutdown();
            System.err.println(TAG + ": stopped cleanly in " + (System.nanoTime() - t0) / 1_000_000 + " ms");
        } catch (Throwable t) {
            System.err.println(TAG + ": error during shutdown: " + t);
        }
    }

    private static void phase(String what, long t0) {
        if (System.getenv("LAUNCHER_TRACE") != null)
            System.err.println(TAG + ": +" + (System.nanoTime() - t0) / 1_000_000 + " ms " + what);
    }

    private static void die(String msg) {
        System.err.println(TAG + ": " + msg);
        System.exit(2);
    }
}
