import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import PostgresClient
import Testing

extension TestMesh {
    /// `pgbench -i` on every node (identical tables), with a uuid primary key
    /// added to pgbench_history so it can be in the mesh.
    func pgbenchInit() throws {
        guard let pgbench = clusters.first?.installation.binary("pgbench") else { throw HarnessError("no pgbench") }
        for (index, cluster) in clusters.enumerated() {
            let initialize = try ChildProcess([pgbench, "-i", "-s", "1", "-q", cluster.conninfo], outputPath: harness.directory + "/pgbench-init-\(index + 1).out")
            guard initialize.wait() == 0 else { throw HarnessError("pgbench -i failed: \(initialize.output)") }
            try cluster.execute("ALTER TABLE public.pgbench_history ADD COLUMN id uuid PRIMARY KEY DEFAULT gen_random_uuid()")
        }
    }

    /// The TPC-B books on node `index`: sums of the branch, teller and account
    /// balances and of the history's deltas, which stock pgbench keeps equal.
    func books(_ index: Int) throws -> [String] {
        try self[index].execute("""
            SELECT (SELECT sum(bbalance) FROM public.pgbench_branches), (SELECT sum(tbalance) FROM public.pgbench_tellers),
                   (SELECT sum(abalance) FROM public.pgbench_accounts), (SELECT coalesce(sum(delta), 0) FROM public.pgbench_history)
            """).rows.first?.map { $0 ?? "NULL" } ?? []
    }
}

let pgbenchTables = ["public.pgbench_accounts", "public.pgbench_branches", "public.pgbench_tellers", "public.pgbench_history"]

/// `counters` opts in with `n` as a delta column (nullable: the capture trigger refuses NULL).
let counterSchema = "CREATE TABLE public.counters (id int PRIMARY KEY, note text, n bigint DEFAULT 0);"

@Suite("delta columns: concurrent increments on every node all count", .enabled(if: installation != nil), .serialized)
struct DeltaTests {
    @Test("stock TPC-B (pgbench -n -c 2 -T 20) on three nodes at once, balances as delta columns: every node identical and sum(bbalance) = sum(tbalance) = sum(abalance) = sum(history.delta); without delta_columns the books break", arguments: [true, false])
    func pgbenchBooks(_ deltas: Bool) throws {
        let mesh = try TestMesh(3)
        try mesh.pgbenchInit()
        func table(_ name: String, _ column: String) -> String {
            """

            [tables."public.\(name)"]
            conflicts = "last-update-wins"
            \(deltas ? "delta_columns = [\"\(column)\"]" : "")

            """
        }
        try mesh.writeConfig(tables: pgbenchTables, extraNodes: table("pgbench_accounts", "abalance") + table("pgbench_branches", "bbalance")
                             + table("pgbench_tellers", "tbalance"))
        let apply = mesh.mmlite(["apply"])
        try #require(apply.code == 0, "\(apply)")
        if deltas {
            for index in 1...3 {
                #expect(try mesh[index].scalar("SELECT count(*) FROM pg_attribute WHERE attrelid = 'mmlite.\"public.pgbench_branches$changes\"'::regclass AND attname = 'mm_delta_bbalance'") == "1")
            }
        }
        guard let pgbench = mesh.clusters.first?.installation.binary("pgbench") else { throw HarnessError("no pgbench") }
        // -n: pgbench's own start-up truncates pgbench_history on each node,
        // which would replicate into the others' first transactions.
        let runs = try mesh.clusters.enumerated().map { index, cluster in
            try ChildProcess([pgbench, "-n", "-c", "2", "-j", "2", "-T", "20", cluster.conninfo], outputPath: mesh.harness.directory + "/tpcb-\(index + 1).out")
        }
        for run in runs { #expect(run.wait() == 0, "\(run.output)") }
        let transactions = try (1...3).map { Int(try mesh[$0].scalar("SELECT count(*) FROM public.pgbench_history") ?? "0") ?? 0 }
        #expect(mesh.quiesce(timeout: 120), "every link caught up")
        let books = try (1...3).map { try mesh.books($0) }
        print("DeltaTests: delta_columns \(deltas): history rows \(transactions), books \(books)")
        let diff = mesh.mmlite(["diff", "--format", "json"])
        #expect(diff.code == 0, "every node identical: \(diff.out.prefix(2000))")
        if deltas {
            for (index, book) in books.enumerated() {
                #expect(book.count == 4 && Set(book).count == 1, "n\(index + 1): branches, tellers, accounts, history: \(book)")
            }
            #expect(Set(books).count == 1)
            #expect((Int(try mesh[1].scalar("SELECT count(*) FROM public.pgbench_history") ?? "0") ?? 0) > 300, "enough transactions ran")
            #expect(try mesh.conflictCount(1) > 0, "concurrent updates of the branch row conflicted (and were logged)")
            #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")
        } else {
            #expect(books.contains { Set($0).count > 1 }, "without delta columns concurrent increments are lost: \(books)")
        }
    }

    @Test("bad delta_columns: a text column, a key column, an unknown column: doctor fails naming it, apply refuses and changes nothing; delta_columns without last-update-wins is a configuration error (78)")
    func badDeltaColumns() throws {
        let mesh = try TestMesh(2, schema: [1: counterSchema, 2: counterSchema])
        for (columns, expected) in [("[\"note\"]", "note is text; delta columns must be smallint, integer, bigint or numeric"),
                                    ("[\"id\"]", "id is part of the primary key"),
                                    ("[\"missing\"]", "has no column missing")] {
            try mesh.writeConfig(tables: ["public.counters"], extraNodes: """

                [tables."public.counters"]
                conflicts = "last-update-wins"
                delta_columns = \(columns)

                """)
            let doctor = mesh.mmlite(["doctor"])
            #expect(doctor.code == 2 && doctor.out.contains("FAIL  delta_columns") && doctor.out.contains(expected), "\(doctor)")
            let apply = mesh.mmlite(["apply"])
            #expect(apply.code == 2 && apply.err.contains(expected), "\(apply)")
            try mesh.expectUntouched()
        }
        try mesh.writeConfig(tables: ["public.counters"], extraNodes: """

            [tables."public.counters"]
            conflicts = "keep-local"
            delta_columns = ["n"]

            """)
        let config = mesh.mmlite(["doctor"])
        #expect(config.code == 78 && config.err.contains("needs conflicts = \"last-update-wins\""), "\(config)")
    }

    @Test("random increments, other-column updates, deletes and re-inserts on 8 keys from three nodes, one clock 3 s behind, links live and cut: converged, and each surviving row's counter is its insert's value plus every change made to that row life (the test's own log of increments matches the change rows)", arguments: [ConflictApply.auto, .sql])
    func randomCounters(_ apply: ConflictApply) throws {
        let mesh = try TestMesh(3, schema: [1: counterSchema, 2: counterSchema, 3: counterSchema])
        try mesh.writeConfig(tables: ["public.counters"], extraNodes: """

            [tables."public.counters"]
            conflicts = "last-update-wins"
            delta_columns = ["n"]

            """, meshSettings: "conflict_apply = \"\(apply.rawValue)\"")
        let applied = mesh.mmlite(["apply"])
        try #require(applied.code == 0, "\(applied)")
        for index in 1...3 {
            // The native trigger has no delta arithmetic: such tables apply with SQL everywhere.
            #expect(try mesh[index].scalar("SELECT tgfoid::regproc::text FROM pg_trigger WHERE tgname = 'mmlite_apply' AND tgrelid = 'mmlite.\"public.counters$changes\"'::regclass") == "mmlite.\"public.counters$apply\"")
        }
        let conninfos = mesh.clusters.map(\.conninfo)
        var issued: [Int: (count: Int, sum: Int)] = [:]
        for round in 1...6 {
            let paused = round % 2 == 0
            if paused { for index in 1...3 { try mesh.setReceiving(index, false) } }
            let log = try counterWorkload(conninfos: conninfos, seed: UInt64(round), operations: 60)
            for (node, entry) in log { issued[node, default: (0, 0)].count += entry.count; issued[node, default: (0, 0)].sum += entry.sum }
            if paused { for index in 1...3 { try mesh.setReceiving(index, true) } }
            #expect(mesh.quiesce(), "round \(round): every link caught up")
            let prints = try mesh.clusters.map { try $0.fingerprint(of: "public.counters") }
            #expect(Set(prints).count == 1, "round \(round): \(prints)")
        }
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")

        // The test's log against the change rows: every increment that changed a row is there, once.
        for node in 1...3 {
            let row = try mesh[node].execute("""
                SELECT count(*), coalesce(sum(mm_delta_n), 0) FROM mmlite."public.counters$changes"
                WHERE mm_node = 'n\(node)' AND mm_op = 'update' AND mm_delta_n <> 0
                """).rows.first ?? []
            #expect(row.map { $0 ?? "" } == [String(issued[node]?.count ?? -1), String(issued[node]?.sum ?? -1)], "n\(node): increments logged by the test \(String(describing: issued[node])) vs change rows \(row)")
        }
        // Each row life's total: its insert's value plus every change made to it, on any node.
        var expected: [String: Int] = [:]
        for cluster in mesh.clusters {
            for row in try cluster.execute("""
                SELECT id, CASE mm_op WHEN 'insert' THEN mm_v_ms || '.' || mm_v_counter || '.' || mm_node
                                      ELSE mm_life_ms || '.' || mm_life_counter || '.' || mm_life_node END,
                       CASE mm_op WHEN 'insert' THEN n ELSE mm_delta_n END
                FROM mmlite."public.counters$changes" WHERE mm_op <> 'delete'
                """).rows {
                expected["\(row[0] ?? "")@\(row[1] ?? "")", default: 0] += Int(row[2] ?? "0") ?? 0
            }
        }
        let survivors = try mesh[1].execute("""
            SELECT t.id, v.life_ms || '.' || v.life_counter || '.' || v.life_node, t.n
            FROM public.counters t JOIN mmlite."public.counters$versions" v USING (id) ORDER BY t.id
            """).rows
        #expect(!survivors.isEmpty)
        for row in survivors {
            let life = "\(row[0] ?? "")@\(row[1] ?? "")"
            #expect(Int(row[2] ?? "") == expected[life], "key \(row[0] ?? ""): counter \(row[2] ?? "") vs \(String(describing: expected[life])) for row life \(row[1] ?? "")")
        }
        let lost = try mesh.conflictCount(1, where: "table_name = 'public.counters'")
        print("DeltaTests: \(issued) increments issued, \(survivors.count) surviving keys, \(lost) conflicts logged on n1")
        #expect(lost > 0, "the cut-off rounds produced conflicts")

        // NULL is refused with not_null_violation, and nothing is written.
        do {
            try mesh[1].execute("UPDATE public.counters SET n = NULL WHERE id = \(survivors.first?[0] ?? "0")")
            Issue.record("setting a delta column to NULL must fail")
        } catch let error as PGError {
            #expect(error.sqlState == "23502" && error.message.contains("cannot be set to NULL"), "\(error)")
        }
    }
}

extension DeltaTests {
    @Test("an arriving delete or update that waits for a local delete-and-re-insert of its key in flight (clock 10 s behind, so the arriving change is newer) decides against the re-inserted row: a delete removes it (also of a key the node had no version of), an update replaces it; both nodes end alike, on the delta table and on a plain last-update-wins table", arguments: [ConflictApply.auto, .sql])
    func deleteWaitsForReinsert(_ apply: ConflictApply) throws {
        // Key 3 on both nodes before conflict handling: a row without a version.
        let schema = counterSchema + """

            CREATE TABLE public.accounts (id int PRIMARY KEY, owner text, balance int);
            INSERT INTO public.counters VALUES (3, 'before', 10); INSERT INTO public.accounts VALUES (3, 'before', 10);
            """
        let mesh = try TestMesh(2, schema: [1: schema, 2: schema])
        try mesh.writeConfig(tables: ["public.counters", "public.accounts"], extraNodes: """

            [tables."public.counters"]
            conflicts = "last-update-wins"
            delta_columns = ["n"]

            [tables."public.accounts"]
            conflicts = "last-update-wins"

            """, meshSettings: "conflict_apply = \"\(apply.rawValue)\"")
        let applied = mesh.mmlite(["apply"])
        try #require(applied.code == 0, "\(applied)")
        // Per table its text and number column; per case n1's change of the key and what both nodes end with.
        let tables = [("public.counters", "note", "n"), ("public.accounts", "owner", "balance")]
        for (table, text, number) in tables {
            let cases = [
                (key: 1, change: "DELETE FROM \(table) WHERE id = 1", expected: "0 rows"),
                (key: 2, change: "UPDATE \(table) SET \(text) = 'n1 later', \(number) = \(number) + 1 WHERE id = 2", expected: "1 rows: 2 n1 later 11"),
                // n2 has neither a row nor a version of key 3 (removed without capture below).
                (key: 3, change: "DELETE FROM \(table) WHERE id = 3", expected: "0 rows"),
            ]
            for (key, change, expected) in cases {
                if key == 3 {
                    try mesh[2].execute("SET session_replication_role = replica; DELETE FROM \(table) WHERE id = 3; RESET session_replication_role")
                } else {
                    try mesh[1].execute("INSERT INTO \(table) VALUES (\(key), 'n1', 10)")
                    #expect(waitUntil(timeout: 30) { try mesh[2].scalar("SELECT count(*) FROM \(table) WHERE id = \(key)") == "1" }, "\(table): the insert arrived")
                }
                try mesh.setReceiving(2, false)
                try mesh[1].execute(change)
                // n2, 10 s behind: deletes and re-inserts the key; its versions are older than n1's change.
                let local = try mesh[2].connect()
                defer { local.close() }
                try local.execute("BEGIN; SET LOCAL mmlite.clock_offset_ms = -10000; DELETE FROM \(table) WHERE id = \(key); INSERT INTO \(table) VALUES (\(key), 'n2 again', 5)")
                try mesh.setReceiving(2, true)
                // The apply worker reaches the key and waits for the local transaction.
                let waiting = waitUntil(timeout: 30) {
                    try mesh[2].scalar("SELECT count(*) FROM pg_locks l JOIN pg_stat_subscription s ON s.pid = l.pid WHERE NOT l.granted") != "0"
                }
                try #require(waiting, "\(table) key \(key): n2's apply worker waits for the local transaction")
                try local.execute("COMMIT")
                #expect(mesh.quiesce(), "\(table) key \(key): every link caught up")
                let contents = try (1...2).map {
                    try mesh[$0].scalar("SELECT count(*) || ' rows' || coalesce(': ' || string_agg(id || ' ' || \(text) || ' ' || \(number), ','), '') FROM \(table) WHERE id = \(key)")
                }
                #expect(contents == [expected, expected], "\(table) key \(key): n1's change is the newest version on both nodes: \(contents)\n\(divergenceReport(mesh.clusters, table: table))")
                #expect(try mesh.conflictCount(2, where: "table_name = '\(table)' AND key = '{\"id\": \(key)}'") > 0, "\(table) key \(key): n2 logged the re-insert it lost")
            }
        }
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")
    }
}

/// Three writers at once (node 3's clock 3 s behind), each `operations` random
/// statements on keys 1...8: increments (alone or with the note), note
/// updates, deletes, inserts. Returns per node (1-based) how many increments
/// changed a row and their sum.
func counterWorkload(conninfos: [String], seed: UInt64, operations: Int) throws -> [Int: (count: Int, sum: Int)] {
    let tallies = try concurrentWriters(conninfos: conninfos) { index, connection -> (count: Int, sum: Int) in
        var random = SplitMix64(seed: seed &* 977 &+ UInt64(index))
        var count = 0, sum = 0
        for step in 0..<operations {
            let key = 1 + Int(random.next() % 8)
            let roll = random.next() % 20
            let delta = Int(random.next() % 19) - 9
            let note = "n\(index + 1)-\(step)"
            let sql: String
            var increments = false
            switch roll {
            case 0..<8: sql = "UPDATE public.counters SET n = n + \(delta) WHERE id = \(key)"; increments = true
            case 8..<11: sql = "UPDATE public.counters SET n = n + \(delta), note = '\(note)' WHERE id = \(key)"; increments = true
            case 11..<14: sql = "UPDATE public.counters SET note = '\(note)' WHERE id = \(key)"
            case 14..<16: sql = "DELETE FROM public.counters WHERE id = \(key)"
            default: sql = "INSERT INTO public.counters VALUES (\(key), '\(note)', \(Int(random.next() % 100))) ON CONFLICT (id) DO NOTHING"
            }
            // A deadlock with an apply worker (rare) rolls the statement back: not counted.
            if let done = try? connection.execute(sql), (done.affectedRows ?? 0) > 0, increments, delta != 0 {
                count += 1
                sum += delta
            }
        }
        return (count, sum)
    }
    return Dictionary(uniqueKeysWithValues: tallies.enumerated().map { ($0.offset + 1, $0.element) })
}
