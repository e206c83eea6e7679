import ClusterHarness
import Foundation
import PostgresClient
import Testing

/// The libpq wrapper against a real server (Debian's PostgreSQL 15, or the
/// first of MMLITE_PG_CONFIGS).
/// Each test gets its own instance, so its own cluster.
@Suite("PostgresClient")
final class PGConnectionTests {
    let harness: ClusterHarness
    let cluster: Cluster

    init() throws {
        let all = try PGInstallation.fromEnvironment()
        let installation = all.first { $0.major == 15 } ?? all[0]
        harness = try ClusterHarness()
        cluster = try harness.startCluster(name: "client", installation: installation)
    }

    deinit { harness.destroyAll() }

    @Test("parameterised queries: values travel separately, NULL stays NULL")
    func parameters() throws {
        let connection = try cluster.connect()
        let result = try connection.query("SELECT $1::text AS a, $2::int + 1 AS b, $3::text IS NULL AS c",
                                          ["it's; DROP TABLE x", "41", nil])
        #expect(result.columns == ["a", "b", "c"])
        #expect(result.rows == [["it's; DROP TABLE x", "42", "t"]])
        #expect(result.value(0, "b") == "42")
    }

    @Test("simple protocol runs several statements and returns the last result")
    func simpleQuery() throws {
        let connection = try cluster.connect()
        let result = try connection.execute("CREATE TEMP TABLE t (i int); INSERT INTO t VALUES (1), (2); SELECT sum(i) FROM t")
        #expect(result.scalar == "3")
        #expect(try connection.execute("INSERT INTO t VALUES (3)").affectedRows == 1)
    }

    @Test("server errors carry SQLSTATE, message, detail and hint; the connection survives")
    func serverErrors() throws {
        let connection = try cluster.connect()
        try connection.execute("CREATE TEMP TABLE k (id int PRIMARY KEY); INSERT INTO k VALUES (1)")
        do {
            try connection.execute("INSERT INTO k VALUES (1)")
            Issue.record("expected a unique violation")
        } catch let error as PGError {
            #expect(error.kind == .server)
            #expect(error.sqlState == "23505")
            #expect(error.message.contains("duplicate key value violates unique constraint"))
            #expect(error.detail == "Key (id)=(1) already exists.")
        }
        do {
            try connection.execute("SELECT * FROM no_such_table")
        } catch let error as PGError {
            #expect(error.sqlState == "42P01")
        }
        do {
            try connection.execute("SELECT no_such_function(1)")
        } catch let error as PGError {
            #expect(error.sqlState == "42883")
            #expect(error.hint?.contains("explicit type casts") == true)
        }
        #expect(try connection.execute("SELECT 1").scalar == "1")
    }

    @Test("notices and warnings are collected, not printed")
    func notices() throws {
        let connection = try cluster.connect()
        try connection.execute("DO $$ BEGIN RAISE WARNING 'careful'; END $$")
        #expect(connection.notices.contains { $0.contains("careful") })
    }

    @Test("COPY out and in, and streaming one into the other")
    func copy() throws {
        let connection = try cluster.connect()
        try connection.execute("CREATE TABLE src (id int PRIMARY KEY, t text); INSERT INTO src SELECT g, 'row ' || g FROM generate_series(1, 1000) g; CREATE TABLE dst (LIKE src)")
        var text = ""
        let copied = try connection.copyOut("COPY (SELECT * FROM src WHERE id <= 3 ORDER BY id) TO STDOUT") { chunk in
            text += String(decoding: chunk, as: UTF8.self)
        }
        #expect(copied == 3)
        #expect(text == "1\trow 1\n2\trow 2\n3\trow 3\n")

        var lines = ["10\tten\n", "11\televen\n"].map { Array($0.utf8) }
        let loaded = try connection.copyIn("COPY dst FROM STDIN") { lines.isEmpty ? nil : lines.removeFirst() }
        #expect(loaded == 2)

        // A failing source aborts the COPY: nothing lands.
        struct Stop: Error {}
        #expect(throws: Stop.self) { try connection.copyIn("COPY dst FROM STDIN") { throw Stop() } }
        #expect(try connection.execute("SELECT count(*) FROM dst").scalar == "2")

        let target = try cluster.connect()
        var bytes = 0
        let streamed = try connection.copy("COPY src TO STDOUT (FORMAT binary)", to: target,
                                           "COPY dst FROM STDIN (FORMAT binary)") { bytes = $0 }
        #expect(streamed == 1000)
        #expect(bytes > 0)
        #expect(try connection.execute("SELECT count(*) FROM dst").scalar == "1002")

        // Rows are passed on in chunks; any chunk size carries the same stream
        // (chunks hold whole rows; the server reads one byte stream either way).
        for (index, size) in [1, 37, 64 * 1024].enumerated() {
            try connection.execute("CREATE TABLE dst_\(index) (LIKE src)")
            var last = 0
            let rows = try connection.copy("COPY src TO STDOUT (FORMAT binary)", to: target,
                                           "COPY dst_\(index) FROM STDIN (FORMAT binary)", chunkSize: size) { last = $0 }
            #expect(rows == 1000)
            #expect(last == bytes)
            #expect(try connection.execute("SELECT (SELECT md5(string_agg(id || ':' || t, ',' ORDER BY id)) FROM src) = (SELECT md5(string_agg(id || ':' || t, ',' ORDER BY id)) FROM dst_\(index))").scalar == "t")
        }
    }

    @Test("replication connection: IDENTIFY_SYSTEM and a slot with an exported snapshot")
    func replicationConnection() throws {
        let replication = try cluster.connect(overrides: ["replication": "database"])
        let identity = try replication.execute("IDENTIFY_SYSTEM")
        #expect(identity.columns.contains("xlogpos"))
        let syntax = replication.serverMajorVersion >= 15 ? "(SNAPSHOT 'export')" : "EXPORT_SNAPSHOT"
        let slot = try replication.execute("CREATE_REPLICATION_SLOT client_test LOGICAL mmlite \(syntax)")
        let snapshot = try #require(slot.value(0, "snapshot_name"))
        // The snapshot is usable from another session while this connection stays open.
        let reader = try cluster.connect()
        try reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try reader.query("SET TRANSACTION SNAPSHOT '\(snapshot)'")
        try reader.execute("COMMIT")
        replication.close()
        try cluster.execute("SELECT pg_drop_replication_slot('client_test')")
    }

    @Test("connection failures: clear message, kind .connection")
    func connectionFailure() throws {
        do {
            _ = try PGConnection("host=127.0.0.1 port=1 dbname=postgres user=postgres connect_timeout=2")
            Issue.record("expected a connection failure")
        } catch let error as PGError {
            #expect(error.kind == .connection)
            #expect(error.message.contains("127.0.0.1"))
        }
    }

    @Test("libpq's conninfo parser: key=value and URI, and its error for garbage")
    func conninfoParsing() throws {
        let pairs = try parseConninfo("host=a port=5433 dbname=x")
        #expect(pairs.contains { $0.key == "port" && $0.value == "5433" })
        let uri = try parseConninfo("postgresql://u@h:5434/db?sslmode=disable")
        #expect(uri.contains { $0.key == "sslmode" && $0.value == "disable" })
        #expect(throws: PGError.self) { try parseConninfo("host=a port") }
    }

    @Test(".pgpass supplies the password, as in psql")
    func pgpass() throws {
        try cluster.execute("CREATE ROLE pw LOGIN PASSWORD 'secret-pw'")
        // Require a password for this role over TCP: put a scram line first in pg_hba.conf.
        let hba = cluster.dataDirectory + "/pg_hba.conf"
        let original = try String(contentsOfFile: hba, encoding: .utf8)
        try ("host all pw 127.0.0.1/32 scram-sha-256\n" + original).write(toFile: hba, atomically: false, encoding: .utf8)
        try cluster.reload()
        let passfile = "/tmp/mmlite-pgpass-\(getpid())"
        defer { unlink(passfile) }
        let conninfo = "host=127.0.0.1 port=\(cluster.port) dbname=postgres user=pw"
        try "127.0.0.1:\(cluster.port):postgres:pw:wrong\n".write(toFile: passfile, atomically: false, encoding: .utf8)
        chmod(passfile, 0o600)
        #expect(throws: PGError.self) { _ = try PGConnection(conninfo, overrides: ["passfile": passfile]) }
        try "127.0.0.1:\(cluster.port):postgres:pw:secret-pw\n".write(toFile: passfile, atomically: false, encoding: .utf8)
        let connection = try PGConnection(conninfo, overrides: ["passfile": passfile])
        #expect(try connection.execute("SELECT current_user").scalar == "pw")
    }
}
