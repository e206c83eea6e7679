import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import PostgresClient
import Testing

/// Each bad input: a clear message, and no node changed (or, for a
/// node dying mid-apply, see CLIMeshTests.nodeDownMidApply).
@Suite("Bad input", .enabled(if: installation != nil))
struct BadInputTests {
    @Test("unreachable node: doctor fails, apply exits 69 and changes nothing")
    func unreachableNode() throws {
        let mesh = try TestMesh(2)
        try mesh.writeConfig(extraNodes: """

            [[nodes]]
            name = "n3"
            dsn = "host=127.0.0.1 port=1 dbname=postgres user=postgres"
            """)
        let doctor = mesh.mmlite(["doctor"])
        #expect(doctor.code == 2, "\(doctor)")
        #expect(doctor.out.contains("FAIL  connection"))
        #expect(doctor.out.contains("cannot connect: connection to server at \"127.0.0.1\", port 1 failed"))
        #expect(doctor.out.contains("fix: check nodes[3].dsn"))
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 69, "\(apply)")
        #expect(apply.err.contains("cannot connect to n3 (host=127.0.0.1 port=1 dbname=postgres user=postgres)"))
        #expect(apply.err.contains("Nothing was changed"))
        try mesh.expectUntouched()
        let status = mesh.mmlite(["status", "--check"])
        #expect(status.code == 2, "\(status)")
        #expect(status.out.contains("n3    DOWN"))
    }

    @Test("wrong password: a clear error, the password never printed, nothing changed")
    func wrongPassword() throws {
        let mesh = try TestMesh(2)
        try mesh[2].execute("CREATE ROLE mmlite_pw LOGIN SUPERUSER PASSWORD 'right-Pa55'")
        let hba = mesh[2].dataDirectory + "/pg_hba.conf"
        let original = try String(contentsOfFile: hba, encoding: .utf8)
        try ("host all mmlite_pw 127.0.0.1/32 scram-sha-256\n" + original).write(toFile: hba, atomically: false, encoding: .utf8)
        try mesh[2].reload()
        let secret = "Wr0ng-S3cret"
        try mesh.writeConfig(dsn: [2: "host=127.0.0.1 port=\(mesh[2].port) dbname=postgres user=mmlite_pw password=\(secret)"])
        for command in [["doctor"], ["apply"], ["apply", "--dry-run"], ["status"], ["status", "--format", "json"]] {
            let run = mesh.mmlite(command)
            #expect(!run.all.contains(secret), "\(command): \(run)")
            #expect(run.all.contains("password authentication failed for user"), "\(command): \(run)")
        }
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 69)
        #expect(apply.err.contains("password=********"))
        try mesh.expectUntouched()
        // The peer_dsn warning: a password in the DSN used by subscriptions.
        try mesh.writeConfig(dsn: [2: "host=127.0.0.1 port=\(mesh[2].port) dbname=postgres user=mmlite_pw password=right-Pa55"])
        let doctor = mesh.mmlite(["doctor"])
        #expect(doctor.code == 1, "\(doctor)")
        #expect(doctor.out.contains("WARN  peer_dsn_password"))
        #expect(doctor.out.contains(".pgpass"))
        #expect(!doctor.all.contains("right-Pa55"))
        let dry = mesh.mmlite(["apply", "--dry-run"])
        #expect(dry.out.contains("password=********"), "\(dry)")
        #expect(!dry.all.contains("right-Pa55"))
    }

    @Test("a DSN that is not a DSN: the file, line and field are named; nothing changed")
    func notADSN() throws {
        let mesh = try TestMesh(2)
        try mesh.writeConfig(dsn: [2: "this is not a dsn"])
        let run = mesh.mmlite(["apply"])
        #expect(run.code == 78, "\(run)")
        #expect(run.err.contains("mmlite.toml:11: nodes[2].dsn: not a valid connection string"), "\(run)")
        try mesh.writeConfig(dsn: [2: "host=127.0.0.1 hots=x password=zzsecretzz"])
        let libpq = mesh.mmlite(["doctor"])
        #expect(libpq.code == 78, "\(libpq)")
        #expect(libpq.err.contains("invalid connection option \"hots\""), "\(libpq)")
        #expect(!libpq.all.contains("zzsecretzz"))
        try mesh.expectUntouched()
    }

    @Test("a node listed twice (same name, or same DSN under another name)")
    func nodeListedTwice() throws {
        let mesh = try TestMesh(2)
        try mesh.writeConfig(extraNodes: """

            [[nodes]]
            name = "n1"
            dsn = "host=127.0.0.1 port=5 dbname=postgres"
            """)
        let sameName = mesh.mmlite(["apply"])
        #expect(sameName.code == 78, "\(sameName)")
        #expect(sameName.err.contains("mmlite.toml:14: nodes[3].name: node \"n1\" is listed twice (also nodes[1])"), "\(sameName)")
        try mesh.writeConfig(extraNodes: """

            [[nodes]]
            name = "n3"
            dsn = "\(mesh[1].conninfo)"
            """)
        let sameDSN = mesh.mmlite(["apply"])
        #expect(sameDSN.code == 78, "\(sameDSN)")
        #expect(sameDSN.err.contains("nodes[3].dsn: node \"n3\" has the same dsn as nodes[1] (\"n1\")"), "\(sameDSN)")
        try mesh.expectUntouched()
    }

    @Test("a table missing on one node")
    func tableMissing() throws {
        let mesh = try TestMesh(3, schema: [2: "CREATE TABLE public.departments (id int PRIMARY KEY, name text NOT NULL);"])
        try mesh.writeConfig()
        let doctor = mesh.mmlite(["doctor"])
        #expect(doctor.code == 2)
        #expect(doctor.out.contains("FAIL  table"))
        #expect(doctor.out.contains("table public.users does not exist on n2"))
        #expect(doctor.out.contains("create it with the same definition as on n1 (pg_dump --schema-only --table=public.users"))
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 2, "\(apply)")
        #expect(apply.err.contains("check failed; nothing was changed"))
        #expect(apply.err.contains("table public.users does not exist on n2"))
        try mesh.expectUntouched()
    }

    @Test("a table with different columns on one node")
    func differentColumns() throws {
        let mesh = try TestMesh(2, schema: [2: testSchema.replacingOccurrences(of: "department_id int", with: "department_id bigint, email text")])
        try mesh.writeConfig()
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 2, "\(apply)")
        #expect(apply.err.contains("public.users differs from n1: column email exists only here, not on n1"), "\(apply)")
        #expect(apply.err.contains("column department_id is bigint here but integer on n1"))
        #expect(apply.err.contains("ALTER TABLE public.users ALTER COLUMN department_id TYPE integer;"))
        try mesh.expectUntouched()
    }

    @Test("a table without primary key")
    func noPrimaryKey() throws {
        let schema = testSchema + "CREATE TABLE public.nokey (id int, v text);"
        let mesh = try TestMesh(2, schema: [1: schema, 2: schema])
        try mesh.writeConfig(tables: ["public.users", "public.nokey"])
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 2, "\(apply)")
        #expect(apply.err.contains("public.nokey has no primary key"))
        #expect(apply.err.contains("ALTER TABLE public.nokey ADD PRIMARY KEY (<key columns>);  -- or, slower: ALTER TABLE public.nokey REPLICA IDENTITY FULL;"))
        try mesh.expectUntouched()
        // The fix given works.
        for index in 1...2 { try mesh[index].execute("ALTER TABLE public.nokey REPLICA IDENTITY FULL") }
        let fixed = mesh.mmlite(["apply"])
        #expect(fixed.code == 0, "\(fixed)")
    }

    @Test("wal_level not logical: says a restart is needed")
    func walLevel() throws {
        let mesh = try TestMesh(2, settings: [2: ["wal_level": "replica"]])
        try mesh.writeConfig()
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 2, "\(apply)")
        #expect(apply.err.contains("wal_level is replica; logical replication needs logical"))
        #expect(apply.err.contains("fix: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (wal_level only changes at a restart, a reload is not enough)"))
        try mesh.expectUntouched()
        #expect(mesh.mmlite(["doctor"]).code == 2)
    }

    @Test("plugin not allowed by output_plugin_libraries: the exact line, a reload is enough",
          .enabled(if: installation?.knowsOutputPluginLibraries == true))
    func pluginNotAllowed() throws {
        let mesh = try TestMesh(2, settings: [1: ["output_plugin_libraries": "'pgoutput, test_decoding'"]])
        try mesh.writeConfig()
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 2, "\(apply)")
        #expect(apply.err.contains("output_plugin_libraries does not allow the mmlite plugin"), "\(apply)")
        #expect(apply.err.contains("add to postgresql.conf on n1: output_plugin_libraries = 'pgoutput, test_decoding, mmlite'"))
        #expect(apply.err.contains("a reload is enough, no restart"))
        try mesh.expectUntouched()
        // Following the advice: ALTER SYSTEM + reload, then apply works.
        #expect(apply.err.contains("ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding', 'mmlite';"))
        try mesh[1].execute("ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding', 'mmlite'")
        try mesh[1].execute("SELECT pg_reload_conf()")
        #expect(waitUntil(timeout: 10) { try mesh[1].scalar("SHOW output_plugin_libraries")?.contains("mmlite") == true })
        let fixed = mesh.mmlite(["apply"])
        #expect(fixed.code == 0, "\(fixed)")
        try mesh.expectReplicates(base: 3000)
    }

    @Test("plugin not installed: names the make install command")
    func pluginMissing() throws {
        // The server looks output plugins up by name along dynamic_library_path:
        // pointing it elsewhere makes mmlite.so "not installed" for this cluster.
        let mesh = try TestMesh(2, settings: [2: ["dynamic_library_path": "'/nonexistent-mmlite-test'"]])
        try mesh.writeConfig()
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 2, "\(apply)")
        #expect(apply.err.contains("the mmlite output plugin is not installed on n2"), "\(apply)")
        #expect(apply.err.contains("make install PG_CONFIG=/usr/lib/postgresql/\(installation?.major ?? 15)/bin/pg_config"))
        try mesh.expectUntouched()
    }

    @Test("a peer_dsn the other node's server cannot use")
    func badPeerDSN() throws {
        let mesh = try TestMesh(2)
        try mesh.writeConfig()
        var text = try String(contentsOfFile: mesh.configPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "name = \"n2\"", with: "name = \"n2\"\npeer_dsn = \"host=127.0.0.1 port=1 dbname=postgres user=postgres\"")
        try text.write(toFile: mesh.configPath, atomically: true, encoding: .utf8)
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 2, "\(apply)")
        #expect(apply.err.contains("n1 cannot reach n2 with its peer_dsn"), "\(apply)")
        try mesh.expectUntouched()
    }
}
