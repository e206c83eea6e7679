import ClusterHarness
import Foundation
import PostgresClient
import Testing

/// mmlite must fail exactly like pgoutput on bad input, and never take the
/// backend (or, through a crash, the whole cluster) down with it.
@Suite("Bad input")
struct BadInputTests {
    /// The error `sql` raises, or "no error".
    func outcome(_ connection: PGConnection, _ sql: String) -> String {
        do {
            _ = try connection.execute(sql)
            return "no error"
        } catch let error as PGError {
            return "\(error.sqlState ?? "-") \(error.message)"
        } catch {
            return "\(error)"
        }
    }

    func changes(_ slot: String, _ options: String) -> String {
        "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('\(slot)', NULL, NULL, \(options))"
    }

    @Test("unknown option, bad proto_version, missing publication: pgoutput's own errors", arguments: installations)
    func sameErrorsAsPgoutput(_ installation: PGInstallation) throws {
        try withClusters(1, installation) { nodes in
            let node = nodes[0]
            let connection = try node.connect()
            let started = try connection.execute("SELECT pg_postmaster_start_time()").scalar
            try connection.execute("CREATE PUBLICATION p FOR TABLE users")
            try connection.execute("SELECT pg_create_logical_replication_slot('with_mmlite', 'mmlite')")
            try connection.execute("SELECT pg_create_logical_replication_slot('with_pgoutput', 'pgoutput')")
            try connection.execute("INSERT INTO users VALUES (1, 'one', NULL)")

            let cases = [
                "'proto_version', '1', 'publication_names', 'p', 'no_such_option', 'x'",
                "'proto_version', '99', 'publication_names', 'p'",
                "'proto_version', 'one', 'publication_names', 'p'",
                "'publication_names', 'p'",
                "'proto_version', '1', 'publication_names', 'no_such_publication'",
            ]
            for options in cases {
                let viaMMLite = outcome(connection, changes("with_mmlite", options))
                let viaPgoutput = outcome(connection, changes("with_pgoutput", options))
                #expect(viaMMLite == viaPgoutput, "options \(options)")
                #expect(viaMMLite != "no error" || options.contains("no_such_publication"), "options \(options): \(viaMMLite)")
                // The same backend keeps working after every error.
                #expect(try connection.execute("SELECT 1").scalar == "1")
            }
            // And the plugin still decodes normally on that backend.
            #expect(outcome(connection, changes("with_mmlite", "'proto_version', '1', 'publication_names', 'p'")) == "no error")
            #expect(try connection.execute("SELECT pg_postmaster_start_time()").scalar == started, "server was not restarted")
            #expect(!node.serverLog().contains("terminated by signal"))
        }
        print(label(installation, "bad options: same errors as pgoutput, backend survives"))
    }

    /// 2026 minors only load output plugins listed in output_plugin_libraries.
    @Test("plugin not in output_plugin_libraries: clear error, fixed by a reload", arguments: installations)
    func notAllowedByOutputPluginLibraries(_ installation: PGInstallation) throws {
        guard installation.knowsOutputPluginLibraries else {
            print(label(installation, "has no output_plugin_libraries: any installed plugin loads"))
            return
        }
        try withClusters(1, installation, schema: false) { nodes in
            let node = nodes[0]
            let connection = try node.connect()
            try connection.execute("ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding'")
            try connection.execute("SELECT pg_reload_conf()")
            try #require(waitUntil(timeout: 10) {
                try node.connect().execute("SHOW output_plugin_libraries").scalar == "pgoutput, test_decoding"
            })
            let refused = outcome(try node.connect(), "SELECT pg_create_logical_replication_slot('s', 'mmlite')")
            #expect(refused.contains("library \"mmlite\" may not be used as an output plugin"), "\(refused)")
            #expect(try node.scalar("SELECT count(*) FROM pg_replication_slots") == "0", "nothing half-created")

            try connection.execute("ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding', 'mmlite'")
            try connection.execute("SELECT pg_reload_conf()")
            try #require(waitUntil(timeout: 10) {
                try node.connect().execute("SHOW output_plugin_libraries").scalar == "pgoutput, test_decoding, mmlite"
            })
            #expect(outcome(try node.connect(), "SELECT pg_create_logical_replication_slot('s', 'mmlite')") == "no error")
        }
        print(label(installation, "output_plugin_libraries refusal and fix: passed"))
    }
}
