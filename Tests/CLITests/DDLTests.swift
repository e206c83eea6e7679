import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import PostgresClient
import Testing

/// One writer per node, running until stopped: inserts of its own keys into
/// `plain` and `accounts`, and updates of 20 shared `accounts` keys (so
/// last-update-wins has conflicts to resolve). Writes only `id` and
/// `balance`, which no migration of the test changes; a transaction failed by
/// a migration's fence (SQLSTATE 40001) is retried, as an application would.
final class MeshWriters: @unchecked Sendable {
    private let lock = NSLock()
    private var running = true
    private(set) var committed = 0
    private(set) var retried = 0
    private(set) var failures: [String] = []
    private var threads: [Thread] = []
    private let finished = DispatchSemaphore(value: 0)

    /// `base`: added to every writer's keys (a second set of writers needs others).
    init(conninfos: [String], base: Int = 0) {
        for (index, conninfo) in conninfos.enumerated() {
            let thread = Thread { [self] in
                defer { finished.signal() }
                guard let connection = try? PGConnection(conninfo) else { record(failure: "n\(index + 1) could not connect"); return }
                defer { connection.close() }
                var key = (index + 1) * 1_000_000 + base
                var random = SplitMix64(seed: UInt64(index + 1))
                while lock.withLock({ running }) {
                    key += 1
                    let shared = 1 + Int(random.next() % 20)
                    let sql = """
                        BEGIN;
                        INSERT INTO public.plain (id, balance) VALUES (\(key), \(key % 1000));
                        INSERT INTO public.accounts (id, balance) VALUES (\(key), \(key % 1000));
                        UPDATE public.accounts SET balance = balance + 1 WHERE id = \(shared);
                        COMMIT
                        """
                    do {
                        try connection.execute(sql)
                        lock.withLock { committed += 1 }
                    } catch let error as PGError {
                        _ = try? connection.execute("ROLLBACK")
                        // 40001: fenced by a migration; 40P01: a deadlock with an apply worker (rare). Both are retried.
                        if error.sqlState == "40001" || error.sqlState == "40P01" {
                            lock.withLock { retried += 1 }
                            key -= 1
                            usleep(20_000)
                        } else {
                            record(failure: "n\(index + 1): \(error)")
                        }
                    } catch {
                        record(failure: "n\(index + 1): \(error)")
                    }
                    usleep(2_000)
                }
            }
            thread.stackSize = 4 << 20
            threads.append(thread)
            thread.start()
        }
    }

    private func record(failure: String) { lock.withLock { failures.append(failure) } }

    /// Stops the writers and waits for them; a second call returns at once.
    func stop() {
        let first = lock.withLock { () -> Bool in defer { running = false }; return running }
        guard first else { return }
        for _ in threads { finished.wait() }
    }
}

let ddlSchema = """
CREATE TABLE public.accounts (id int PRIMARY KEY, owner text, balance int);
CREATE TABLE public.plain (id int PRIMARY KEY, owner text, balance int);
CREATE SCHEMA extra;
CREATE TABLE extra.keep (id int PRIMARY KEY);
"""

extension TestMesh {
    /// accounts (last-update-wins) and plain, plus every table of schema `extra`.
    static func ddlMesh(_ installation: PGInstallation) throws -> TestMesh {
        let mesh = try TestMesh(3, schema: [1: ddlSchema, 2: ddlSchema, 3: ddlSchema], installation: installation)
        try mesh.writeConfig(tables: ["public.accounts", "public.plain", "extra.*"], extraNodes: """

            [tables."public.accounts"]
            conflicts = "last-update-wins"

            """)
        let apply = mesh.mmlite(["apply"])
        guard apply.code == 0 else { throw HarnessError("apply failed: \(apply)") }
        // The 20 keys every writer updates.
        try mesh[1].execute("INSERT INTO public.accounts SELECT g, 'seed', 0 FROM generate_series(1, 20) g")
        mesh.expectEverywhere((1...20).map { "\($0):seed:0" }.joined(separator: ","), where: "true")
        return mesh
    }

    /// The errors of the server logs, less the ones a migration causes by design:
    /// the fence refusing local writes, and a statement tried inside the
    /// migration's transaction that PostgreSQL runs only outside one.
    func unexpectedLogErrors() -> [String] {
        logErrors().filter { !$0.contains("mmlite ddl is changing table") && !$0.contains("cannot run inside a transaction block") }
    }

    func fingerprints(_ table: String) throws -> Set<String> { Set(try clusters.map { try $0.fingerprint(of: table) }) }

    func columns(_ index: Int, _ table: String) throws -> String {
        try self[index].scalar("SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '\(table)'::regclass AND attnum > 0 AND NOT attisdropped") ?? ""
    }

    func openMigrations() throws -> [String] {
        try clusters.flatMap { try $0.execute("SELECT gid FROM pg_prepared_xacts UNION ALL SELECT 'fence on ' || tgrelid::regclass FROM pg_trigger WHERE tgname = 'mmlite_ddl_fence'").rows.compactMap { $0[0] } }
    }

    /// Every apply worker of the mesh runs.
    func allWorkersRunning() throws -> Bool {
        try clusters.allSatisfy { try $0.scalar("SELECT count(*) FROM pg_stat_subscription WHERE subname LIKE 'mmlite_shop_%' AND pid IS NOT NULL AND relid IS NULL") == "\(clusters.count - 1)" }
    }
}

@Suite("mmlite ddl: schema changes on every node at once while every node writes", .enabled(if: !conflictInstallations.isEmpty), .serialized)
struct DDLTests {
    @Test("ADD COLUMN (with and without default), ALTER TYPE, RENAME, DROP COLUMN, CREATE INDEX CONCURRENTLY, CREATE TABLE and writes to it, DROP TABLE: on a plain and a last-update-wins table, every node identical afterwards",
          arguments: conflictInstallations)
    func migrations(_ pg: PGInstallation) throws {
        let mesh = try TestMesh.ddlMesh(pg)
        let writers = MeshWriters(conninfos: mesh.clusters.map(\.conninfo))
        defer { writers.stop() }
        func ddl(_ sql: String, sourceLocation: SourceLocation = #_sourceLocation) {
            usleep(300_000)  // writes between migrations
            let started = Date()
            let run = mesh.mmlite(["ddl", sql])
            print(String(format: "DDLTests PostgreSQL \(pg.major): %.2f s, exit \(run.code): \(sql.prefix(60))", Date().timeIntervalSince(started)))
            #expect(run.code == 0, "\(sql): \(run)", sourceLocation: sourceLocation)
        }
        ddl("ALTER TABLE public.plain ADD COLUMN note text; ALTER TABLE public.accounts ADD COLUMN note text")
        // Values written to the new column on different nodes reach every node, on both tables.
        // (The writers' own first keys: no writer updates them again, so last-update-wins keeps these.)
        try mesh[1].execute("UPDATE public.accounts SET note = 'from n1' WHERE id = 1000001; UPDATE public.plain SET note = 'from n1' WHERE id = 1000001")
        try mesh[2].execute("UPDATE public.accounts SET note = 'from n2' WHERE id = 2000001; UPDATE public.plain SET note = 'from n2' WHERE id = 2000001")
        ddl("ALTER TABLE public.plain ADD COLUMN flag int NOT NULL DEFAULT 7; ALTER TABLE public.accounts ADD COLUMN flag int NOT NULL DEFAULT 7")
        ddl("ALTER TABLE public.plain ALTER COLUMN balance TYPE bigint; ALTER TABLE public.accounts ALTER COLUMN balance TYPE bigint")
        try mesh[3].execute("UPDATE public.accounts SET balance = 5000000000, note = 'big from n3' WHERE id = 3000001")
        ddl("ALTER TABLE public.plain RENAME COLUMN owner TO holder; ALTER TABLE public.accounts RENAME COLUMN owner TO holder")
        try mesh[3].execute("UPDATE public.accounts SET holder = 'renamed on n3' WHERE id = 3000002; UPDATE public.plain SET holder = 'renamed on n3' WHERE id = 3000001")
        ddl("ALTER TABLE public.plain DROP COLUMN flag; ALTER TABLE public.accounts DROP COLUMN flag")
        ddl("CREATE INDEX CONCURRENTLY plain_balance ON public.plain (balance); CREATE INDEX CONCURRENTLY accounts_balance ON public.accounts (balance)")
        ddl("CREATE TABLE extra.items (id int PRIMARY KEY, label text)")
        for index in 1...3 { try mesh[index].execute("INSERT INTO extra.items VALUES (\(index), 'item from n\(index)')") }
        let items = waitUntil(timeout: 30) { try (1...3).allSatisfy { try mesh[$0].scalar("SELECT string_agg(id || ':' || label, ',' ORDER BY id) FROM extra.items") == "1:item from n1,2:item from n2,3:item from n3" } }
        #expect(items, "rows written to the created table on every node reach every node")
        writers.stop()

        #expect(mesh.quiesce(), "every link caught up")
        #expect(writers.failures.isEmpty, "\(writers.failures.prefix(5))")
        #expect(writers.committed > 100, "the writers kept writing (\(writers.committed) transactions, \(writers.retried) retried)")
        print("DDLTests PostgreSQL \(pg.major): \(writers.committed) writer transactions, \(writers.retried) retried after a fence")
        for table in ["public.plain", "public.accounts", "extra.items"] {
            #expect(try mesh.fingerprints(table).count == 1, "\(table) is identical on every node")
            #expect(Set(try (1...3).map { try mesh.columns($0, table) }).count == 1, "\(table) has the same columns everywhere")
        }
        #expect(try mesh.columns(1, "public.accounts") == "id integer, holder text, balance bigint, note text")
        for (id, note) in [(1000001, "from n1"), (2000001, "from n2"), (3000001, "big from n3")] {
            #expect(try (1...3).allSatisfy { try mesh[$0].scalar("SELECT note FROM public.accounts WHERE id = \(id)") == note }, "note of \(id) everywhere")
        }
        #expect(try (1...3).allSatisfy { try mesh[$0].scalar("SELECT balance FROM public.accounts WHERE id = 3000001") == "5000000000" })
        #expect(try (1...3).allSatisfy { try mesh[$0].scalar("SELECT holder FROM public.plain WHERE id = 3000001") == "renamed on n3" })
        #expect(try (1...3).allSatisfy { try mesh[$0].scalar("SELECT count(*) FROM pg_indexes WHERE indexname IN ('plain_balance', 'accounts_balance')") == "2" })

        let drop = mesh.mmlite(["ddl", "DROP TABLE extra.items"])
        #expect(drop.code == 0, "\(drop)")
        #expect(try (1...3).allSatisfy { try mesh[$0].scalar("SELECT to_regclass('extra.items') IS NULL") == "t" })
        // TRUNCATE of an opted-in table is refused locally; through mmlite ddl it empties every node at once, under writes.
        let again = MeshWriters(conninfos: mesh.clusters.map(\.conninfo), base: 500_000)
        usleep(300_000)
        let truncate = mesh.mmlite(["ddl", "TRUNCATE public.accounts, public.plain"])
        usleep(300_000)
        again.stop()
        #expect(truncate.code == 0, "\(truncate)")
        #expect(again.failures.isEmpty, "\(again.failures.prefix(5))")
        #expect(mesh.quiesce())
        for table in ["public.plain", "public.accounts"] { #expect(try mesh.fingerprints(table).count == 1, "\(table) identical after TRUNCATE") }
        #expect(try mesh.openMigrations().isEmpty)
        #expect(try mesh.allWorkersRunning(), "every apply worker runs")
        #expect(mesh.mmlite(["status", "--check"]).code == 0)
        #expect(mesh.unexpectedLogErrors().isEmpty, "\(mesh.unexpectedLogErrors())")
    }

    @Test("a migration that fails on one node changes nothing anywhere and leaves no prepared transaction or fence", arguments: conflictInstallations)
    func failsOnOneNode(_ pg: PGInstallation) throws {
        let mesh = try TestMesh.ddlMesh(pg)
        let writers = MeshWriters(conninfos: mesh.clusters.map(\.conninfo))
        defer { writers.stop() }
        try mesh[2].execute("CREATE TABLE public.clash (id int)")
        let before = try (1...3).map { try mesh.columns($0, "public.accounts") }
        // --dry-run shows, per node, what would run, and runs none of it.
        let dry = mesh.mmlite(["ddl", "--dry-run", "ALTER TABLE public.accounts ADD COLUMN note text"])
        #expect(dry.code == 0, "\(dry)")
        for index in 1...3 {
            #expect(dry.out.contains("-- on n\(index):\nALTER TABLE public.accounts ADD COLUMN note text;"), "\(dry)")
            #expect(dry.out.contains("-- on n\(index):\nPREPARE TRANSACTION"), "\(dry)")
            #expect(dry.out.contains("-- on n\(index):\nCOMMIT PREPARED"), "\(dry)")
        }
        #expect(try (1...3).map { try mesh.columns($0, "public.accounts") } == before && mesh.openMigrations().isEmpty, "a dry run changes nothing")
        let run = mesh.mmlite(["ddl", "ALTER TABLE public.accounts ADD COLUMN note text; CREATE TABLE public.clash (id int)"])
        writers.stop()
        #expect(run.code == 1, "\(run)")
        #expect(run.err.contains("on n2") && run.err.contains("Nothing was changed"), "\(run)")
        #expect(try (1...3).map { try mesh.columns($0, "public.accounts") } == before, "no node got the column")
        #expect(try (1...3).allSatisfy { try mesh[$0].scalar("SELECT to_regclass('public.clash') IS NULL") == (($0 == 2) ? "f" : "t") })
        #expect(try mesh.openMigrations().isEmpty, "no prepared transaction, no fence")
        #expect(writers.failures.isEmpty, "\(writers.failures.prefix(5))")
        #expect(mesh.quiesce())
        #expect(try mesh.fingerprints("public.accounts").count == 1 && mesh.fingerprints("public.plain").count == 1)
        #expect(mesh.mmlite(["status", "--check"]).code == 0)
    }

    @Test("killed (SIGKILL) after PREPARE on some nodes: status says so (CRITICAL), ddl refuses a new migration, --resume finishes it", arguments: conflictInstallations)
    func interrupted(_ pg: PGInstallation) throws {
        let mesh = try TestMesh.ddlMesh(pg)
        let writers = MeshWriters(conninfos: mesh.clusters.map(\.conninfo))
        defer { writers.stop() }
        usleep(300_000)
        let program = try #require(MMLiteProgram.path, "the mmlite program is built")
        let outputPath = mesh.harness.directory + "/ddl.out"
        let child = try ChildProcess([program, "ddl", "-c", mesh.configPath, "ALTER TABLE public.accounts ADD COLUMN note text; ALTER TABLE public.plain ADD COLUMN note text"],
                                     outputPath: outputPath)
        let seen = waitUntil(timeout: 60, interval: 0.005) { child.output.contains("n1: prepared") || child.poll() != nil }
        let status = child.kill()
        #expect(seen && status == 128 + SIGKILL, "killed after n1 prepared: exit \(status)\n\(child.output)")
        let open = try mesh.openMigrations()
        #expect(!open.isEmpty, "a prepared transaction or a fence is left")
        let shown = mesh.mmlite(["status", "--check"])
        #expect(shown.code == 2 && shown.out.contains("mmlite ddl --resume"), "\(shown)")
        let refused = mesh.mmlite(["ddl", "ALTER TABLE public.plain ADD COLUMN other int"])
        #expect(refused.code == 2 && refused.err.contains("--resume"), "\(refused)")
        let resumed = mesh.mmlite(["ddl", "--resume"])
        writers.stop()
        #expect(resumed.code == 0, "\(resumed)")
        #expect(try mesh.openMigrations().isEmpty)
        let columns = Set(try (1...3).map { try mesh.columns($0, "public.accounts") + " | " + mesh.columns($0, "public.plain") })
        #expect(columns.count == 1, "committed everywhere or nowhere: \(columns)")
        #expect(writers.failures.isEmpty, "\(writers.failures.prefix(5))")
        #expect(mesh.quiesce())
        #expect(try mesh.fingerprints("public.accounts").count == 1 && mesh.fingerprints("public.plain").count == 1)
        #expect(try mesh.allWorkersRunning())
        #expect(mesh.mmlite(["status", "--check"]).code == 0)
        #expect(mesh.unexpectedLogErrors().filter { !$0.contains("terminating connection") && !$0.contains("could not receive data") }.isEmpty,
                "\(mesh.unexpectedLogErrors())")
    }
}

/// The `mmlite` program next to the test bundle (built by `swift build --build-tests`).
enum MMLiteProgram {
    static var path: String? {
        let path = Bundle.main.executableURL?.deletingLastPathComponent().appendingPathComponent("mmlite").path
        return path.flatMap { FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil }
    }
}
