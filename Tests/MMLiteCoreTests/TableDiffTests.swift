import MMLiteCore
import Testing

@Suite("TableDiff: buckets, narrowing and re-check decisions")
struct TableDiffTests {
    let table = TableDiff.Table(name: QualifiedName(schema: "public", name: "Pairs"),
                                columns: [.init(name: "a", type: "integer"), .init(name: "b", type: "text"),
                                          .init(name: "v", type: "text"), .init(name: "g", type: "integer", generated: true)],
                                key: ["a", "b"])

    @Test("bucket counts are powers of two from about 128 rows per bucket, at most 65536")
    func bucketCounts() {
        #expect(TableDiff.bucketCount(estimatedRows: 0) == 1)
        #expect(TableDiff.bucketCount(estimatedRows: 100) == 1)
        #expect(TableDiff.bucketCount(estimatedRows: 10_000) == 128)
        #expect(TableDiff.bucketCount(estimatedRows: 1_000_000) == 8192)
        #expect(TableDiff.bucketCount(estimatedRows: 10_000_000_000) == 65_536)
    }

    @Test("the SQL names every column in one order, quotes identifiers, groups only with several buckets")
    func sql() {
        let whole = TableDiff.summarySQL(table, buckets: 1)
        #expect(whole.contains("(coalesce(pg_catalog.hashtextextended((r.a)::text, 1), -1) # coalesce(pg_catalog.hashtextextended((r.b)::text, 2), -2) # coalesce(pg_catalog.hashtextextended((r.v)::text, 3), -3) # coalesce(pg_catalog.hashtextextended((r.g)::text, 4), -4))"))
        #expect(whole.contains("FROM public.\"Pairs\" AS r"))
        #expect(!whole.contains("GROUP BY"))
        let grouped = TableDiff.summarySQL(table, buckets: 256)
        #expect(grouped.contains("(h & 255)::int4 AS bucket") && grouped.contains("GROUP BY 1"))
        #expect(TableDiff.bucketRowsSQL(table, buckets: 256).contains("jsonb_build_object('a', r.a, 'b', r.b)::text AS key"))
        #expect(TableDiff.rowsSQL(table).contains("jsonb_populate_recordset(NULL::public.\"Pairs\", $1::jsonb)"))
        #expect(TableDiff.keysParameter(["{\"a\": 1}", "{\"a\": 2}"]) == "[{\"a\": 1},{\"a\": 2}]")
    }

    @Test("hashed by value: exact built-in types in one record hash, numeric/float/interval by their binary form, the rest by text")
    func hashingByValue() {
        #expect(TableDiff.Hashing.of(typeName: "int8", builtIn: true, deterministic: true) == .value)
        #expect(TableDiff.Hashing.of(typeName: "text", builtIn: true, deterministic: true) == .value)
        // Equal but not identical values (1.5 = 1.50, '1 day' = '24 hours', -0 = 0) must not hash alike.
        #expect(TableDiff.Hashing.of(typeName: "numeric", builtIn: true, deterministic: true) == .binary(function: "numeric_send"))
        #expect(TableDiff.Hashing.of(typeName: "interval", builtIn: true, deterministic: true) == .binary(function: "interval_send"))
        #expect(TableDiff.Hashing.of(typeName: "float8", builtIn: true, deterministic: true) == .binary(function: "float8send"))
        // A nondeterministic collation, an extension's or a user's type (an enum's hash is its OID), jsonb, bpchar: text.
        #expect(TableDiff.Hashing.of(typeName: "text", builtIn: true, deterministic: false) == .text)
        #expect(TableDiff.Hashing.of(typeName: "mood", builtIn: false, deterministic: true) == .text)
        #expect(TableDiff.Hashing.of(typeName: "jsonb", builtIn: true, deterministic: true) == .text)
        #expect(TableDiff.Hashing.of(typeName: "bpchar", builtIn: true, deterministic: true) == .text)
        #expect(TableDiff.Hashing.of(typeName: "timetz", builtIn: true, deterministic: true) == .text)

        var mixed = TableDiff.Table(name: QualifiedName(schema: "public", name: "t"),
                                    columns: [.init(name: "id", type: "bigint", hashing: .value),
                                              .init(name: "doc", type: "jsonb", hashing: .text),
                                              .init(name: "amount", type: "numeric", hashing: .binary(function: "numeric_send"))],
                                    key: ["id"], byValue: true)
        #expect(TableDiff.summarySQL(mixed, buckets: 1).contains(
            "(pg_catalog.hash_record_extended(ROW(r.id, pg_catalog.numeric_send(r.amount)), 0) # coalesce(pg_catalog.hashtextextended((r.doc)::text, 2), -2))"))
        // A node without hash_record_extended (13) anywhere: every column by text.
        mixed.byValue = false
        #expect(!TableDiff.summarySQL(mixed, buckets: 1).contains("hash_record_extended"))
    }

    @Test("a bucket differs when its count or either sum differs on any node, or it is missing on one")
    func differingBuckets() {
        let same = TableDiff.Summary(rows: 3, sum: "10020")
        let summaries: [String: [Int: TableDiff.Summary]] = [
            "n1": [0: same, 1: same, 2: same, 3: same, 5: .empty],
            "n2": [0: same, 1: TableDiff.Summary(rows: 3, sum: "11020"), 2: TableDiff.Summary(rows: 2, sum: "10020"), 3: same],
            "n3": [0: same, 1: same, 2: same, 4: same],
        ]
        #expect(TableDiff.differingBuckets(summaries) == [1, 2, 3, 4])
        #expect(TableDiff.differingBuckets(["n1": [0: same], "n2": [0: same]]).isEmpty)
        #expect(TableDiff.rowCount(summaries["n1"] ?? [:]) == 12)
    }

    @Test("batches hold at most the limit of rows (the largest node's count), a large bucket alone")
    func batches() {
        let summaries: [String: [Int: TableDiff.Summary]] = [
            "n1": [1: .init(rows: 40, sum: "0"), 2: .init(rows: 40, sum: "0"), 3: .init(rows: 500, sum: "0"), 4: .init(rows: 10, sum: "0")],
            "n2": [1: .init(rows: 70, sum: "0")],
        ]
        #expect(TableDiff.batches([1, 2, 3, 4], summaries: summaries, limit: 100) == [[1], [2], [3], [4]])
        #expect(TableDiff.batches([2, 4], summaries: summaries, limit: 100) == [[2, 4]])
    }

    @Test("keys differ when a hash differs or a node lacks the key")
    func differingKeys() {
        let keys = TableDiff.differingKeys([
            "n1": ["{\"id\": 1}": "10", "{\"id\": 2}": "20", "{\"id\": 3}": "30"],
            "n2": ["{\"id\": 1}": "10", "{\"id\": 2}": "21", "{\"id\": 3}": "30", "{\"id\": 4}": "40"],
            "n3": ["{\"id\": 1}": "10", "{\"id\": 2}": "20"],
        ])
        #expect(keys == ["{\"id\": 2}", "{\"id\": 3}", "{\"id\": 4}"])
    }

    @Test("re-check: settled when now equal, confirmed only when stable across two looks, else changing")
    func recheck() {
        let first = RecheckDecision.judge(keys: ["a", "b"], previous: nil, current: ["n1": ["a": "1", "b": "2"], "n2": ["a": "1", "b": "3"]])
        #expect(first.settled == ["a"] && first.changing == ["b"] && first.confirmed.isEmpty)
        let previous = ["n1": ["b": "2", "c": "5"], "n2": ["b": "3"]]
        let second = RecheckDecision.judge(keys: ["b", "c"], previous: previous, current: ["n1": ["b": "2", "c": "6"], "n2": ["b": "3"]])
        #expect(second.confirmed == ["b"] && second.changing == ["c"] && second.settled.isEmpty)
    }

    @Test("catch-up: a link is behind while its slot has not confirmed the publisher's mark; links without a slot are not waited for")
    func catchUp() throws {
        let mark = try #require(LSN("0/2000"))
        let behind = CatchUp.behind(marks: ["n1": mark, "n2": mark],
                                    slots: ["n1": ["n2": LSN("0/1000"), "n3": LSN("0/3000")], "n2": ["n1": nil]],
                                    nodes: ["n1", "n2", "n3"])
        #expect(behind == ["n1 -> n2 (4 kB to go)", "n2 -> n1 (no confirmed position yet)"])
        #expect(CatchUp.behind(marks: ["n1": mark], slots: [:], nodes: ["n1", "n2"]).isEmpty)
    }
}

@Suite("ContentCheck: a table enters the mesh identical everywhere")
struct ContentCheckTests {
    let users = QualifiedName(schema: "public", name: "users")
    let same = [0: TableDiff.Summary(rows: 5, sum: "1002")]

    @Test("empty everywhere passes without hashing; rows on one node only fail, naming the nodes and the way out")
    func emptiness() {
        let empty = ContentCheck.Facts(empty: true, rowEstimate: 0)
        #expect(!ContentCheck.needsHashes(["n1": empty, "n2": empty]))
        #expect(ContentCheck.judge(users, facts: ["n1": empty, "n2": empty], nodes: ["n1", "n2"], running: false, hashSkipped: false).status == .pass)
        let holding = ContentCheck.Facts(empty: false, rowEstimate: 100)
        #expect(!ContentCheck.needsHashes(["n1": holding, "n2": empty]))
        for skipped in [false, true] {
            let fresh = ContentCheck.judge(users, facts: ["n1": holding, "n2": empty], nodes: ["n1", "n2"], running: false, hashSkipped: skipped)
            #expect(fresh.status == .failure && fresh.message.contains("holds rows on n1 (about 100 rows) but is empty on n2"))
            #expect(fresh.fix?.contains("mmlite join NODE --from n1") == true)
        }
        #expect(ContentCheck.judge(users, facts: ["n1": holding], nodes: ["n1", "n2"], running: false, hashSkipped: false).status == .warning,
                "a node whose table could not be read is not taken for identical")
        let fresh = ContentCheck.judge(users, facts: ["n1": holding, "n2": empty], nodes: ["n1", "n2"], running: false, hashSkipped: false)
        let beforeJoin = ContentCheck.beforeJoin(fresh, source: "n1")
        #expect(beforeJoin.status == .warning && beforeJoin.message.contains("mmlite join NODE --from n1"), "doctor, before growing a one-node mesh by join")
        let added = ContentCheck.judge(users, facts: ["n1": empty, "n2": holding], nodes: ["n1", "n2"], running: true, hashSkipped: false)
        #expect(added.status == .failure && added.fix?.contains("mmlite repair --table public.users --from n2") == true)
    }

    @Test("rows everywhere: identical summaries pass, different ones fail, skipped hashes warn")
    func hashes() {
        var one = ContentCheck.Facts(empty: false, rowEstimate: 5, summary: same)
        var two = one
        #expect(ContentCheck.needsHashes(["n1": one, "n2": two]))
        #expect(ContentCheck.judge(users, facts: ["n1": one, "n2": two], nodes: ["n1", "n2"], running: false, hashSkipped: false).status == .pass)
        two.summary = [0: TableDiff.Summary(rows: 5, sum: "1003")]
        let differs = ContentCheck.judge(users, facts: ["n1": one, "n2": two], nodes: ["n1", "n2"], running: false, hashSkipped: false)
        #expect(differs.status == .failure && differs.message.contains("differs between the nodes (rows: n1 5, n2 5"))
        one.summary = nil
        two.summary = nil
        #expect(ContentCheck.judge(users, facts: ["n1": one, "n2": two], nodes: ["n1", "n2"], running: false, hashSkipped: true).status == .warning)
    }

    @Test("tables to wire: all while the mesh does not run, else those some member does not publish")
    func tablesToWire() {
        let events = QualifiedName(schema: "public", name: "events")
        let states = ["n1": NodeState(name: "n1", versionNumber: 150000, publication: PublicationState(tables: [users])),
                      "n2": NodeState(name: "n2", versionNumber: 150000, publication: PublicationState(tables: [users, events]))]
        #expect(ContentCheck.tablesToWire([users, events], states: states, members: ["n1", "n2"], running: false) { [$0] } == [users, events])
        #expect(ContentCheck.tablesToWire([users, events], states: states, members: ["n1", "n2"], running: true) { [$0] } == [events])
        // A table that opts in to conflict handling is published through its change table: replicated already.
        let optedIn = ["n1": NodeState(name: "n1", versionNumber: 150000, publication: PublicationState(tables: [ConflictSQL.changeTable(users)])),
                       "n2": NodeState(name: "n2", versionNumber: 150000, publication: PublicationState(tables: [users]))]
        #expect(ContentCheck.tablesToWire([users], states: optedIn, members: ["n1", "n2"], running: true) { [$0, ConflictSQL.changeTable($0)] }.isEmpty)
    }
}

@Suite("RepairPlan: sources, changes and their SQL")
struct RepairPlanTests {
    let table = TableDiff.Table(name: QualifiedName(schema: "public", name: "accounts"),
                                columns: [.init(name: "id", type: "integer"), .init(name: "owner", type: "text"),
                                          .init(name: "total", type: "integer", generated: true)],
                                key: ["id"])
    let nodes = ["n1", "n2", "n3"]

    func version(_ ms: Int64, _ counter: Int64, _ node: String) -> RepairPlan.Version {
        RepairPlan.Version(ms: ms, counter: counter, node: node, row: "{\"v_ms\": \(ms), \"v_node\": \"\(node)\"}")
    }

    @Test("--from: every other node inserts, updates or deletes to match the source; equal rows are left alone")
    func from() {
        let key = RepairPlan.Key(key: "{\"id\": 1}", rows: ["n1": "{\"id\": 1, \"owner\": \"a\"}", "n2": nil, "n3": "{\"id\": 1, \"owner\": \"b\"}"],
                                 hashes: ["n1": "10", "n2": nil, "n3": "11"])
        let extra = RepairPlan.Key(key: "{\"id\": 2}", rows: ["n1": nil, "n2": "{\"id\": 2}", "n3": nil], hashes: ["n1": nil, "n2": "5", "n3": nil])
        let changes = RepairPlan.changes([key, extra], mode: .from("n1"), nodes: nodes, optedIn: false)
        #expect(changes.map { "\($0.node) \($0.kind) \($0.key)" } == ["n2 insert {\"id\": 1}", "n3 update {\"id\": 1}", "n2 delete {\"id\": 2}"])
        #expect(changes.allSatisfy { $0.source == "n1" && $0.reason == "mmlite repair --from n1" })
        #expect(RepairPlan.changes([key], mode: .from("n9"), nodes: nodes, optedIn: false).isEmpty)
    }

    @Test("--last-update-wins: the highest version (ms, counter, node in byte order); equal versions: the node that wrote it, else the first")
    func lastUpdateWins() {
        #expect(version(5, 0, "n1") < version(5, 1, "n0"))
        #expect(version(5, 1, "B") < version(5, 1, "a"))
        func key(_ versions: [String: RepairPlan.Version?]) -> RepairPlan.Key {
            RepairPlan.Key(key: "{\"id\": 1}", rows: ["n1": "1", "n2": "2", "n3": "3"], hashes: ["n1": "1", "n2": "2", "n3": "3"], versions: versions)
        }
        #expect(RepairPlan.source(of: key(["n1": version(1, 0, "n1"), "n2": version(9, 0, "n2"), "n3": nil]), mode: .lastUpdateWins, nodes: nodes) == "n2")
        #expect(RepairPlan.source(of: key(["n1": version(9, 0, "n3"), "n2": version(9, 0, "n3"), "n3": version(9, 0, "n3")]), mode: .lastUpdateWins, nodes: nodes) == "n3")
        #expect(RepairPlan.source(of: key([:]), mode: .lastUpdateWins, nodes: nodes) == "n1")
        let changes = RepairPlan.changes([key(["n2": version(9, 0, "n2")])], mode: .lastUpdateWins, nodes: nodes, optedIn: true)
        #expect(changes.map(\.node) == ["n1", "n3"] && changes.allSatisfy { $0.newVersion == version(9, 0, "n2") && $0.oldVersion == nil })
    }

    @Test("statements: the row first, then the version, then the log; generated columns never written")
    func statements() throws {
        let change = RepairPlan.Change(node: "n2", key: "{\"id\": 1}", kind: .update, source: "n1", oldRow: "{\"id\": 1, \"owner\": \"b\"}",
                                       newRow: "{\"id\": 1, \"owner\": \"a\"}", oldVersion: version(1, 0, "n2"), newVersion: version(2, 0, "n1"),
                                       reason: "mmlite repair --from n1")
        let statements = RepairPlan.statements(change, table: table, optedIn: true)
        #expect(statements.count == 3)
        #expect(statements[0].sql.contains("INSERT INTO public.accounts (id, owner) OVERRIDING SYSTEM VALUE"))
        #expect(statements[0].sql.contains("ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner"))
        #expect(statements[1].sql.contains("INSERT INTO mmlite.\"public.accounts$versions\"") && statements[1].parameters == [version(2, 0, "n1").row])
        #expect(statements[2].sql.contains("'repair'") && statements[2].parameters.first == "public.accounts" && statements[2].parameters.last == "n1")
        var delete = change
        delete.newRow = nil
        delete.newVersion = nil
        let deletes = RepairPlan.statements(delete, table: table, optedIn: true)
        #expect(deletes[0].sql.hasPrefix("DELETE FROM public.accounts AS r USING") && deletes[0].parameters == ["[{\"id\": 1}]"])
        #expect(deletes[1].sql.hasPrefix("DELETE FROM mmlite.\"public.accounts$versions\""))
        let begin = RepairPlan.begin(origin: RepairPlan.origin(ObjectNames(mesh: "shop")))
        #expect(begin.contains("SET LOCAL session_replication_role = replica") && begin.first?.contains("mmlite_shop_repair") == true)
    }
}
