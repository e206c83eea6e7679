import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import PostgresClient
import Testing

/// Four tables of 10,000 rows: integer, text and composite keys; `pairs` and
/// `accounts` opt in to conflict handling.
let diffSchema = """
CREATE TABLE public.ints (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
CREATE TABLE public.texts (k text PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
CREATE TABLE public.pairs (a int, b text, v text, n int NOT NULL DEFAULT 0, PRIMARY KEY (a, b));
CREATE TABLE public.accounts (id int PRIMARY KEY, owner text, balance int NOT NULL DEFAULT 0);
INSERT INTO public.ints SELECT g, 'v' || g FROM generate_series(1, 10000) g;
INSERT INTO public.texts SELECT 'k' || g, 'v' || g FROM generate_series(1, 10000) g;
INSERT INTO public.pairs SELECT g, 'b', 'v' || g FROM generate_series(1, 10000) g;
INSERT INTO public.accounts SELECT g, 'o' || g FROM generate_series(1, 10000) g;
"""

extension Cluster {
    /// A change made on this node only, as a restore or a hand fix makes it:
    /// under a replication origin (no output plugin forwards it) and with
    /// session_replication_role = replica (no capture trigger sees it).
    func writeLocally(_ sql: String) throws {
        try execute("""
            SELECT pg_replication_origin_create('mmlite_test_local') WHERE NOT EXISTS (SELECT FROM pg_replication_origin WHERE roname = 'mmlite_test_local');
            SELECT pg_replication_origin_session_setup('mmlite_test_local');
            BEGIN; SET LOCAL session_replication_role = replica; \(sql); COMMIT;
            SELECT pg_replication_origin_session_reset();
            """)
    }
}

/// `diff --format json`, parsed: the differing keys as "table:values of the key
/// columns in column-name order", and the differences themselves.
func diffJSON(_ run: Run) -> (result: String, keys: Set<String>, differences: [[String: Any]]) {
    guard let json = try? JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any] else { return ("unparsable", [], []) }
    let differences = json["differences"] as? [[String: Any]] ?? []
    let keys = differences.map { difference -> String in
        let key = difference["key"] as? [String: Any] ?? [:]
        return "\(difference["table"] as? String ?? "?"):" + key.keys.sorted().map { "\(key[$0] ?? "?")" }.joined(separator: ",")
    }
    return (json["result"] as? String ?? "?", Set(keys), differences)
}

func difference(_ differences: [[String: Any]], table: String, key: String, column: String = "id") -> [String: Any]? {
    let wanted = differences.first { ($0["table"] as? String) == table && "\(($0["key"] as? [String: Any])?[column] ?? "")" == key }
    return wanted?["nodes"] as? [String: Any]
}

/// pgbench on every node at once, each on its own keys (n1: 1001-4000,
/// n2: 4001-7000, n3: 7001-10000), updating all four tables.
func startPgbench(_ mesh: TestMesh, seconds: Int) throws -> [ChildProcess] {
    guard let pgbench = mesh.clusters.first?.installation.binary("pgbench") else { return [] }
    return try mesh.clusters.enumerated().map { index, cluster in
        let script = mesh.harness.directory + "/diff-\(index + 1).pgbench"
        try """
            \\set id random(\(1001 + 3000 * index), \(4000 + 3000 * index))
            UPDATE public.ints SET n = n + 1 WHERE id = :id;
            UPDATE public.texts SET n = n + 1 WHERE k = 'k' || :id;
            UPDATE public.pairs SET n = n + 1 WHERE a = :id AND b = 'b';
            UPDATE public.accounts SET balance = balance + 1 WHERE id = :id;

            """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o644)
        return try ChildProcess([pgbench, "-n", "-f", script, "-T", String(seconds), "-c", "2", "-j", "2", cluster.conninfo],
                                outputPath: mesh.harness.directory + "/pgbench-\(index + 1).out")
    }
}

@Suite("mmlite diff and repair on live tables, and apply refusing diverged tables", .enabled(if: installation != nil), .serialized)
struct DiffTests {
    @Test("divergence injected on one node at a time (missing, extra, changed, NULL vs value, TOASTed value; integer, text and composite keys; plain and opted-in) is reported exactly while pgbench writes on every node; repair --from and --last-update-wins make the nodes identical, log every change and keep replication running; --dry-run changes nothing")
    func divergenceUnderWrites() throws {
        let mesh = try TestMesh(3, schema: [1: diffSchema, 2: diffSchema, 3: diffSchema])
        try mesh.writeConfig(tables: ["public.ints", "public.texts", "public.pairs", "public.accounts"], extraNodes: """

            [tables."public.pairs"]
            conflicts = "last-update-wins"

            [tables."public.accounts"]
            conflicts = "last-update-wins"

            """)
        let apply = mesh.mmlite(["apply"])
        try #require(apply.code == 0, "\(apply)")
        let identical = mesh.mmlite(["diff"])
        show(identical)
        #expect(identical.code == 0 && identical.out.contains("Identical: 4 tables on 3 nodes"), "\(identical)")

        try mesh[1].writeLocally("UPDATE public.ints SET v = 'changed on n1' WHERE id = 3; UPDATE public.accounts SET owner = 'changed on n1' WHERE id = 11; DELETE FROM public.texts WHERE k = 'k8'")
        try mesh[2].writeLocally("""
            DELETE FROM public.ints WHERE id = 1; UPDATE public.ints SET v = NULL WHERE id = 4; UPDATE public.texts SET v = 'changed' WHERE k = 'k7';
            DELETE FROM public.pairs WHERE a = 10 AND b = 'b'; INSERT INTO public.accounts VALUES (60000, 'extra on n2', 0);
            UPDATE public.accounts SET owner = 'lww n2' WHERE id = 12;
            INSERT INTO mmlite."public.accounts$versions" (id, v_ms, v_counter, v_node, op) VALUES (12, 9999999999999, 0, 'n2', 'update')
            """)
        try mesh[3].writeLocally("INSERT INTO public.ints VALUES (50001, 'extra on n3'); UPDATE public.ints SET v = repeat(md5('toast'), 4000) WHERE id = 5; UPDATE public.pairs SET v = 'changed' WHERE a = 9 AND b = 'b'")

        let writers = try startPgbench(mesh, seconds: 20)
        defer { for writer in writers { _ = writer.wait() } }
        #expect(waitUntil(timeout: 10) { try mesh[1].scalar("SELECT sum(n) FROM public.ints WHERE id > 4000") != "0" }, "pgbench writes reach n1")

        let found = mesh.mmlite(["diff", "--format", "json"])
        let parsed = diffJSON(found)
        #expect(found.code == 1 && parsed.result == "different", "\(found)")
        #expect(parsed.keys == ["public.ints:1", "public.ints:3", "public.ints:4", "public.ints:5", "public.ints:50001",
                                "public.texts:k7", "public.texts:k8", "public.pairs:9,b", "public.pairs:10,b",
                                "public.accounts:11", "public.accounts:12", "public.accounts:60000"], "\(found)")
        let missing = difference(parsed.differences, table: "public.ints", key: "1")
        #expect(missing?["n2"] is NSNull && (missing?["n1"] as? [String: Any])?["v"] as? String == "v1", "\(String(describing: missing))")
        let nulled = difference(parsed.differences, table: "public.ints", key: "4")
        #expect((nulled?["n2"] as? [String: Any])?["v"] is NSNull && (nulled?["n3"] as? [String: Any])?["v"] as? String == "v4")
        let toasted = difference(parsed.differences, table: "public.ints", key: "5")
        #expect(((toasted?["n3"] as? [String: Any])?["v"] as? String)?.count == 128_000)
        let extra = difference(parsed.differences, table: "public.ints", key: "50001")
        #expect(extra?["n1"] is NSNull && extra?["n2"] is NSNull && (extra?["n3"] as? [String: Any]) != nil)
        let table = mesh.mmlite(["diff", "--table", "public.texts"])
        show(table)
        #expect(table.code == 1 && table.out.contains("public.texts {\"k\": \"k7\"}") && table.out.contains("  n1: missing"), "\(table)")

        let dry = mesh.mmlite(["repair", "--table", "public.ints", "--from", "n1", "--dry-run"])
        show(dry)
        #expect(dry.code == 0 && dry.out.contains("n2: insert {\"id\": 1}") && dry.out.contains("n3: delete {\"id\": 50001}"), "\(dry)")
        #expect(try mesh[2].scalar("SELECT count(*) FROM public.ints WHERE id = 1") == "0", "--dry-run changed nothing")
        #expect(try mesh.clusters.allSatisfy { try $0.scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'mmlite' AND tablename = 'conflicts'") == "0" || $0.scalar("SELECT count(*) FROM mmlite.conflicts WHERE kind = 'repair'") == "0" })

        for (table, how) in [("public.ints", ["--from", "n1"]), ("public.texts", ["--from", "n2"]),
                             ("public.pairs", ["--last-update-wins"]), ("public.accounts", ["--last-update-wins"])] {
            let repair = mesh.mmlite(["repair", "--table", table] + how)
            show(repair)
            #expect(repair.code == 0 && repair.out.contains("Done: \(table) now holds the same rows"), "\(repair)")
        }
        let after = mesh.mmlite(["diff", "--format", "json"])
        #expect(after.code == 0 && diffJSON(after).result == "identical", "still under pgbench: \(after)")
        for writer in writers { #expect(writer.wait() == 0, "pgbench: \(writer.output)") }

        // Identical, with the source's values, versions following on the opted-in table; logged; replicating.
        #expect(mesh.quiesce())
        for table in ["public.ints", "public.texts", "public.pairs", "public.accounts"] {
            #expect(Set(try mesh.clusters.map { try $0.fingerprint(of: table) }).count == 1, "\(table)")
        }
        for index in 1...3 {
            #expect(try mesh[index].scalar("SELECT v FROM public.ints WHERE id = 3") == "changed on n1")
            #expect(try mesh[index].scalar("SELECT v FROM public.texts WHERE k = 'k7'") == "changed")
            #expect(try mesh[index].scalar("SELECT owner || ':' || v.v_ms || ':' || v.v_node FROM public.accounts a JOIN mmlite.\"public.accounts$versions\" v USING (id) WHERE id = 12") == "lww n2:9999999999999:n2")
            #expect(try mesh[index].scalar("SELECT count(*) FROM public.accounts WHERE id = 60000") == "0")
        }
        #expect(try mesh[2].scalar("SELECT count(*) FROM mmlite.conflicts WHERE kind = 'repair' AND table_name = 'public.ints' AND key = '{\"id\": 1}' AND peer = 'n1' AND local_row IS NULL AND remote_row->>'v' = 'v1'") == "1")
        #expect(try mesh[3].scalar("SELECT count(*) FROM mmlite.conflicts WHERE kind = 'repair' AND key = '{\"id\": 50001}' AND remote_row IS NULL AND local_row->>'v' = 'extra on n3'") == "1")
        #expect(try mesh[1].scalar("SELECT count(*) FROM mmlite.conflicts WHERE kind = 'repair' AND table_name = 'public.accounts' AND key = '{\"id\": 12}' AND peer = 'n2' AND remote_version->>'v_node' = 'n2'") == "1")
        #expect(mesh.mmlite(["status", "--check"]).code == 0)
        try mesh[3].execute("INSERT INTO public.ints VALUES (70000, 'after repair'); INSERT INTO public.accounts VALUES (70000, 'after repair')")
        #expect(waitUntil(timeout: 30) { try mesh[1].scalar("SELECT count(*) FROM public.ints i JOIN public.accounts a USING (id) WHERE id = 70000") == "1" })
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")
    }

    @Test("an unreachable node: diff says so, compares the others and exits 75; a difference among them is still found (exit 1); repair refuses (69); bad arguments exit 64")
    func unreachableNode() throws {
        let mesh = try TestMesh(3)
        try mesh.writeConfig()
        try #require(mesh.mmlite(["apply"]).code == 0)
        try mesh[1].execute("INSERT INTO public.users SELECT g, 'u' || g, NULL FROM generate_series(1, 500) g")
        #expect(waitUntil(timeout: 30) { try mesh[3].scalar("SELECT count(*) FROM public.users") == "500" })
        // Bad input: clear errors, exit 64, nothing changed.
        let notMesh = mesh.mmlite(["diff", "--table", "public.events"])
        #expect(notMesh.code == 64 && notMesh.err.contains("public.events is not a table of mesh \"shop\""), "\(notMesh)")
        let plainLWW = mesh.mmlite(["repair", "--table", "public.users", "--last-update-wins"])
        #expect(plainLWW.code == 64 && plainLWW.err.contains("use --from NODE"), "\(plainLWW)")
        #expect(mesh.mmlite(["repair", "--table", "public.users", "--from", "n1", "--last-update-wins"]).code == 64)
        #expect(mesh.mmlite(["repair", "--table", "public.users", "--from", "n9"]).code == 64)
        try mesh[3].stop()
        let noRepair = mesh.mmlite(["repair", "--table", "public.users", "--from", "n1"])
        #expect(noRepair.code == 69 && noRepair.err.contains("Nothing was changed"), "\(noRepair)")
        let run = mesh.mmlite(["diff"])
        show(run)
        #expect(run.code == 75, "\(run)")
        #expect(run.err.contains("cannot connect to n3") && run.out.contains("n3: not compared") && run.out.contains("Incomplete"), "\(run)")
        #expect(diffJSON(mesh.mmlite(["diff", "--format", "json"])).result == "incomplete")
        try mesh[2].writeLocally("UPDATE public.users SET name = 'changed' WHERE id = 7")
        let found = mesh.mmlite(["diff", "--format", "json"])
        #expect(found.code == 1 && diffJSON(found).keys == ["public.users:7"], "\(found)")
    }

    @Test("rows hashed by value: equal but not identical values (numeric 1.5 vs 1.50, float -0 vs 0, interval 1 day vs 24 hours, a changed uuid, timestamptz or bytea) are differences; identical enums whose OIDs differ between nodes are not")
    func valueHashing() throws {
        let mesh = try TestMesh(2)
        // A type created first on n2 only: the enum's labels get other OIDs there.
        try mesh[2].execute("CREATE TYPE public.unused AS ENUM ('a', 'b', 'c')")
        for index in 1...2 {
            try mesh[index].execute("""
                CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
                CREATE TABLE public.kinds (id bigint PRIMARY KEY, amount numeric, ratio float8, span interval, k uuid,
                                           at timestamptz, raw bytea, mood public.mood, doc jsonb, tags text[]);
                INSERT INTO public.kinds SELECT g, g * 1.5, g / 4.0, g * interval '1 hour', md5(g::text)::uuid,
                    timestamptz '2026-01-01 00:00+00' + g * interval '1 minute', decode(md5(g::text), 'hex'),
                    (ARRAY['sad', 'ok', 'happy']::public.mood[])[1 + g % 3], jsonb_build_object('g', g), ARRAY['t' || g]
                FROM generate_series(1, 2000) g;
                """)
        }
        try mesh.writeConfig(tables: ["public.users", "public.departments", "public.events", "public.kinds"])
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 0, "identical rows, enums included, pass the content check\n\(apply)")
        #expect(mesh.mmlite(["diff", "--table", "public.kinds"]).code == 0)
        try mesh[2].writeLocally("""
            UPDATE public.kinds SET amount = 1.50 WHERE id = 1;
            UPDATE public.kinds SET ratio = '-0' WHERE id = 2;
            UPDATE public.kinds SET ratio = 0 WHERE id = 3;
            UPDATE public.kinds SET span = interval '1 day' WHERE id = 24;
            UPDATE public.kinds SET k = md5('other')::uuid WHERE id = 5;
            UPDATE public.kinds SET at = at + interval '1 microsecond' WHERE id = 6;
            UPDATE public.kinds SET raw = raw || '\\x00'::bytea WHERE id = 7;
            UPDATE public.kinds SET mood = 'sad' WHERE id = 8
            """)
        try mesh[1].writeLocally("UPDATE public.kinds SET span = interval '24 hours' WHERE id = 24; UPDATE public.kinds SET ratio = 0 WHERE id = 2")
        let run = mesh.mmlite(["diff", "--table", "public.kinds", "--format", "json"])
        #expect(run.code == 1, "\(run)")
        // id 3: 3/4.0 = 0.75 became 0 on n2, a plain change; id 8: 'happy' (8 % 3 = 2) became 'sad'.
        #expect(diffJSON(run).keys == Set([1, 2, 3, 24, 5, 6, 7, 8].map { "public.kinds:\($0)" }), "\(run)")
    }

    @Test("a fresh mesh over rows on one node and none (or other rows) on the other: doctor fails, apply refuses and changes nothing; apply on the node holding the data, then join, ends identical")
    func freshMeshDiverged() throws {
        let mesh = try TestMesh(2)
        try mesh.writeConfig()
        try mesh[1].execute("INSERT INTO public.users SELECT g, 'u' || g, NULL FROM generate_series(1, 100) g")
        let doctor = mesh.mmlite(["doctor"])
        show(doctor)
        #expect(doctor.code == 2 && doctor.out.contains("FAIL  content") && doctor.out.contains("public.users holds rows on n1 but is empty on n2"), "\(doctor)")
        #expect(doctor.out.contains("mmlite join NODE --from n1"), "the way out is named\n\(doctor)")
        let refused = mesh.mmlite(["apply"])
        show(refused)
        #expect(refused.code == 2 && refused.err.contains("public.users holds rows on n1 but is empty on n2") && refused.err.contains("nothing was changed"), "\(refused)")
        try mesh.expectUntouched()
        #expect(mesh.mmlite(["doctor", "--skip-hash-check"]).code == 2, "the emptiness check is never skipped")

        try mesh[2].execute("INSERT INTO public.users SELECT g, 'u' || g, NULL FROM generate_series(1, 100) g; UPDATE public.users SET name = 'other' WHERE id = 50")
        let differs = mesh.mmlite(["apply"])
        #expect(differs.code == 2 && differs.err.contains("public.users differs between the nodes (rows: n1 100, n2 100"), "\(differs)")
        try mesh.expectUntouched()
        let skipped = mesh.mmlite(["doctor", "--skip-hash-check"])
        #expect(skipped.code != 2 && skipped.out.contains("contents not compared (--skip-hash-check)"), "\(skipped)")

        try mesh.writeConfig(members: [1])
        try #require(mesh.mmlite(["apply"]).code == 0)
        try mesh.writeConfig(members: [1, 2])
        let join = mesh.mmlite(["join", "n2", "--from", "n1", "--force"])
        #expect(join.code == 0, "\(join)")
        let diff = mesh.mmlite(["diff"])
        #expect(diff.code == 0, "\(diff)")
        #expect(try mesh[2].scalar("SELECT name FROM public.users WHERE id = 50") == "u50")
    }

    @Test("a table with rows on one node added to a running mesh while it is written: apply refuses and changes nothing; repair --from copies it, apply wires it, every node ends identical")
    func addedTableDiverged() throws {
        let mesh = try TestMesh(2)
        try mesh.writeConfig()
        try #require(mesh.mmlite(["apply"]).code == 0)
        let writer = try Writer(cluster: mesh[1], base: 1_000_000)
        try mesh[1].execute("INSERT INTO public.events SELECT g, 'e' || g FROM generate_series(1, 40) g")
        try mesh.writeConfig(tables: ["public.users", "public.departments", "public.events"])
        let refused = mesh.mmlite(["apply"])
        show(refused)
        #expect(refused.code == 2 && refused.err.contains("public.events holds rows on n1 but is empty on n2") && refused.err.contains("mmlite repair --table public.events --from n1"), "\(refused)")
        for index in 1...2 {
            #expect(try mesh[index].scalar("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'mmlite_shop' AND tablename = 'events'") == "0")
        }
        let repair = mesh.mmlite(["repair", "--table", "public.events", "--from", "n1"])
        #expect(repair.code == 0 && repair.out.contains("n2: 40 changes made"), "\(repair)")
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 0, "\(apply)")
        try mesh[2].execute("INSERT INTO public.events VALUES (41, 'from n2')")
        #expect(waitUntil(timeout: 30) { try mesh[1].scalar("SELECT count(*) FROM public.events") == "41" })
        writer.stop()
        #expect(writer.failure == nil)
        #expect(mesh.converged([1, 2]))
        let diff = mesh.mmlite(["diff"])
        #expect(diff.code == 0 && diff.out.contains("Identical: 3 tables on 2 nodes"), "\(diff)")
    }
}
