import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import PostgresClient
import Testing

/// Two tables with the same shape: `accounts` opts in to conflict handling,
/// `plain` does not (the control that shows the tests can fail).
let conflictSchema = """
CREATE TABLE public.accounts (id int PRIMARY KEY, owner text, balance int);
CREATE TABLE public.plain (id int PRIMARY KEY, owner text, balance int);
"""

extension TestMesh {
    /// A 3-node mesh built by `mmlite apply`, `accounts` opted in with `policy`.
    static func conflictMesh(policy: String = "last-update-wins", installation: PGInstallation? = nil, apply: ConflictApply = .auto,
                             filter: FilterMode = .auto) throws -> TestMesh {
        let mesh = try TestMesh(3, schema: [1: conflictSchema, 2: conflictSchema, 3: conflictSchema], installation: installation)
        try mesh.writeConflictConfig(policy: policy, apply: apply, filter: filter)
        let apply = mesh.mmlite(["apply"])
        guard apply.code == 0 else { throw HarnessError("apply failed: \(apply)") }
        guard mesh.waitUntilSynced() else { throw HarnessError("the initial table copies did not finish") }
        return mesh
    }

    /// Waits until every subscribed table finished its initial copy: a copy's
    /// slot (`pg_<sub>_sync_<rel>_<system>`) uses pgoutput, and while one
    /// exists capture stores change rows instead of sending change messages
    /// (the safe fallback), which tests counting messages must not meet.
    func waitUntilSynced(timeout: Double = 60) -> Bool {
        waitUntil(timeout: timeout) {
            try clusters.allSatisfy { cluster in
                try cluster.scalar("""
                    SELECT (SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r')
                         + (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pg\\_%\\_sync\\_%')
                    """) == "0"
            }
        }
    }

    static func conflictMesh(_ conflictCase: ConflictCase) throws -> TestMesh {
        try conflictMesh(installation: conflictCase.pg, apply: conflictCase.apply, filter: conflictCase.filter)
    }

    func writeConflictConfig(policy: String, apply: ConflictApply = .auto, filter: FilterMode = .auto) throws {
        try writeConfig(tables: ["public.accounts", "public.plain"], extraNodes: """

            [tables."public.accounts"]
            conflicts = "\(policy)"

            """, meshSettings: "conflict_apply = \"\(apply.rawValue)\"\nfilter = \"\(filter.rawValue)\"")
    }

    /// Starts recording what node `index` sends: an idle logical slot of the
    /// mmlite plugin (an idle mmlite slot leaves capture free to send change messages).
    func startAudit(_ index: Int) throws {
        try self[index].execute("SELECT pg_create_logical_replication_slot('audit_sent', 'mmlite')")
    }

    /// The change rows node `index` sent since `startAudit`, whether stored in
    /// its change table or sent as change messages: what its plugin puts on
    /// the wire for `public.accounts`, column name to text value.
    func sentChanges(_ index: Int) throws -> [[String: String]] {
        let result = try self[index].execute("""
            SELECT data::text FROM pg_logical_slot_peek_binary_changes('audit_sent', NULL, NULL,
                'proto_version', '1', 'publication_names', 'mmlite_shop')
            """)
        let (complete, _) = try PgOutput.transactions(try result.rows.map { try PgOutput.bytes(fromHex: $0[0] ?? "") })
        return complete.flatMap(\.changes)
            .filter { $0.operation == .insert && $0.relation.qualifiedName == "mmlite.public.accounts$changes" }
            .map { change in
                change.row.reduce(into: [String: String]()) { row, column in
                    if case .text(let text) = column.value { row[column.name] = text }
                }
            }
    }

    /// How many change rows node `index` stores.
    func storedChanges(_ index: Int) throws -> Int {
        Int(try self[index].scalar("SELECT count(*) FROM mmlite.\"public.accounts$changes\"") ?? "") ?? -1
    }

    /// The function behind node `index`'s apply trigger on the change table.
    func applyTriggerFunction(_ index: Int) throws -> String {
        try self[index].scalar("SELECT tgfoid::regproc::text FROM pg_trigger WHERE tgname = 'mmlite_apply' AND tgrelid = 'mmlite.\"public.accounts$changes\"'::regclass") ?? ""
    }

    /// The function behind node `index`'s capture triggers on `accounts` (one name: the three agree).
    func captureTriggerFunction(_ index: Int) throws -> String {
        try self[index].scalar("SELECT string_agg(DISTINCT tgfoid::regproc::text, ' ') FROM pg_trigger WHERE tgname LIKE 'mmlite\\_capture\\_%' AND tgrelid = 'public.accounts'::regclass") ?? ""
    }

    /// Stops (or restarts) every subscription on node `index`: it receives nothing meanwhile.
    func setReceiving(_ index: Int, _ enabled: Bool) throws {
        for other in 1...clusters.count where other != index {
            try self[index].execute("ALTER SUBSCRIPTION mmlite_shop_from_n\(other) \(enabled ? "ENABLE" : "DISABLE")")
        }
    }

    /// Stops or restarts only the link publisher -> subscriber.
    func setLink(from publisher: Int, to subscriber: Int, _ enabled: Bool) throws {
        try self[subscriber].execute("ALTER SUBSCRIPTION mmlite_shop_from_n\(publisher) \(enabled ? "ENABLE" : "DISABLE")")
    }

    func rows(_ index: Int, _ table: String = "accounts", where condition: String = "true") throws -> String {
        try self[index].scalar("SELECT coalesce(string_agg(id || ':' || coalesce(owner, '-') || ':' || coalesce(balance::text, '-'), ',' ORDER BY id), '') FROM public.\(table) WHERE \(condition)") ?? ""
    }

    /// Waits until every node holds `expected` for the rows matching `condition`.
    func expectEverywhere(_ expected: String, where condition: String, table: String = "accounts",
                          sourceLocation: SourceLocation = #_sourceLocation) {
        let ok = waitUntil(timeout: 30) { try (1...clusters.count).allSatisfy { try rows($0, table, where: condition) == expected } }
        let seen = (1...clusters.count).map { (try? rows($0, table, where: condition)) ?? "?" }
        #expect(ok, "expected \(expected) everywhere, have \(seen)", sourceLocation: sourceLocation)
    }

    /// Waits until every slot has confirmed every local write made so far.
    func quiesce(timeout: Double = 60) -> Bool {
        let targets = clusters.map { (try? $0.scalar("SELECT pg_current_wal_lsn()")) ?? nil }
        return waitUntil(timeout: timeout) {
            try clusters.indices.allSatisfy { index in
                guard let target = targets[index] else { return false }
                return try clusters[index].scalar("""
                    SELECT bool_and(confirmed_flush_lsn >= '\(target)'::pg_lsn) AND count(*) = \(clusters.count - 1)
                    FROM pg_replication_slots WHERE slot_name LIKE 'mmlite_shop_%'
                    """) == "t"
            }
        }
    }

    func conflictCount(_ index: Int, where condition: String = "true") throws -> Int {
        Int(try self[index].scalar("SELECT count(*) FROM mmlite.conflicts WHERE \(condition)") ?? "0") ?? 0
    }
}

/// The conflict suites run on every PostgreSQL 15 and 18 in `MMLITE_PG_CONFIGS`
/// (the generated SQL must work on both; 18 also reports conflicts itself).
let conflictInstallations: [PGInstallation] = ((try? PGInstallation.fromEnvironment()) ?? []).filter { [15, 18].contains($0.major) }

/// The convergence tests run with the native apply trigger (`conflict_apply =
/// "auto"`, the plugin is installed) on every conflict installation, and with
/// the SQL one (`"sql"`) on the first.
struct ConflictCase: Sendable, CustomTestStringConvertible {
    var pg: PGInstallation
    var apply: ConflictApply
    var filter: FilterMode = .auto
    var testDescription: String {
        "PostgreSQL \(pg.major), \(apply == .sql ? "SQL" : "native") apply" + (filter == .mmlite ? ", mmlite slots" : "")
    }
    /// Whether native capture sends change messages instead of storing change
    /// rows: it does when every slot is an mmlite slot, which `filter = "auto"`
    /// chooses unless both ends are 16 or later (then pgoutput with origin = none).
    var changeMessages: Bool { apply != .sql && (filter == .mmlite || pg.major < 16) }
    /// What `applyTriggerFunction` must name.
    var expectedTriggerFunction: String { apply == .sql ? "mmlite.\"public.accounts$apply\"" : "mmlite.apply_change" }
    /// What `captureTriggerFunction` must name.
    var expectedCaptureFunction: String { apply == .sql ? "mmlite.\"public.accounts$capture\"" : "mmlite.capture_change" }
}

let conflictCases: [ConflictCase] = conflictInstallations.map { ConflictCase(pg: $0, apply: .auto) }
    + conflictInstallations.prefix(1).map { ConflictCase(pg: $0, apply: .sql) }
    + conflictInstallations.filter { $0.major >= 16 }.map { ConflictCase(pg: $0, apply: .auto, filter: .mmlite) }

@Suite("conflict handling on a 3-node mesh", .enabled(if: installation != nil), .serialized)
struct ConflictTests {
    @Test("every pairing converges (insert/insert, update/update, update/delete, delete/insert, update before insert, skewed clock); without opting in the same writes diverge", arguments: conflictCases)
    func pairings(_ conflictCase: ConflictCase) throws {
        let mesh = try TestMesh.conflictMesh(conflictCase)
        for index in 1...3 {
            #expect(try mesh.applyTriggerFunction(index) == conflictCase.expectedTriggerFunction)
            #expect(try mesh.captureTriggerFunction(index) == conflictCase.expectedCaptureFunction)
        }
        // status says which apply each node uses.
        let applyStatus = mesh.mmlite(["status", "--format", "json"])
        #expect(applyStatus.out.components(separatedBy: "\"conflict_apply\": \"\(conflictCase.apply == .sql ? "sql" : "native")\"").count == 4, "\(applyStatus)")
        // The user table left the publication; its change table replaced it.
        #expect(try mesh[1].scalar("SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY schemaname, tablename) FROM pg_publication_tables WHERE pubname = 'mmlite_shop'") == "mmlite.public.accounts$changes,public.plain")
        #expect(mesh.mmlite(["apply"]).out.contains("Nothing to do"))

        // Plain replication of an opted-in table still works.
        try mesh[1].execute("INSERT INTO public.accounts VALUES (1, 'ann', 10)")
        mesh.expectEverywhere("1:ann:10", where: "id = 1")
        try mesh[2].execute("UPDATE public.accounts SET balance = 11 WHERE id = 1")
        mesh.expectEverywhere("1:ann:11", where: "id = 1")
        try mesh[3].execute("DELETE FROM public.accounts WHERE id = 1")
        mesh.expectEverywhere("", where: "id = 1")
        #expect(try mesh.conflictCount(1) + mesh.conflictCount(2) + mesh.conflictCount(3) == 0, "causal writes are not conflicts")

        // insert/insert: both nodes insert key 10 while cut off; n2 writes later and wins.
        try mesh.setReceiving(1, false); try mesh.setReceiving(2, false)
        try mesh[1].execute("INSERT INTO public.accounts VALUES (10, 'from n1', 1)")
        try mesh[2].execute("INSERT INTO public.accounts VALUES (10, 'from n2', 2)")
        // update/update on key 11 (existing everywhere, written before the cut-off on n3).
        try mesh[3].execute("INSERT INTO public.accounts VALUES (11, 'base', 0), (12, 'base', 0), (13, 'base', 0)")
        try mesh.setReceiving(1, true); try mesh.setReceiving(2, true)
        mesh.expectEverywhere("10:from n2:2,11:base:0,12:base:0,13:base:0", where: "id BETWEEN 10 AND 13")
        #expect(try mesh.conflictCount(1, where: "key = '{\"id\": 10}' AND kind = 'insert_insert' AND winner = 'remote'") == 1)
        #expect(try mesh.conflictCount(2, where: "key = '{\"id\": 10}' AND kind = 'insert_insert' AND winner = 'local'") == 1)

        try mesh.setReceiving(1, false); try mesh.setReceiving(2, false); try mesh.setReceiving(3, false)
        try mesh[1].execute("UPDATE public.accounts SET owner = 'n1' WHERE id = 11")       // update/update
        try mesh[2].execute("UPDATE public.accounts SET owner = 'n2' WHERE id = 11")
        try mesh[1].execute("UPDATE public.accounts SET owner = 'n1' WHERE id = 12")       // update, then a later delete
        try mesh[3].execute("DELETE FROM public.accounts WHERE id = 12")
        try mesh[2].execute("DELETE FROM public.accounts WHERE id = 13")                 // delete, then a later update
        try mesh[3].execute("UPDATE public.accounts SET owner = 'n3' WHERE id = 13")
        try mesh[1].execute("DELETE FROM public.accounts WHERE id = 10")                 // delete, then a later re-insert
        try mesh[3].execute("DELETE FROM public.accounts WHERE id = 10; INSERT INTO public.accounts VALUES (10, 'again', 3)")
        for index in 1...3 { try mesh.setReceiving(index, true) }
        mesh.expectEverywhere("10:again:3,11:n2:0,13:n3:0", where: "id BETWEEN 10 AND 13")
        #expect(try mesh.conflictCount(1, where: "key = '{\"id\": 11}' AND kind = 'update_update'") == 1)
        #expect(try mesh.conflictCount(3, where: "key = '{\"id\": 13}' AND kind = 'update_delete' AND winner = 'local'") == 1)

        // Update after a concurrent delete: n2 deletes, n3 (not having seen it)
        // updates later. n1 applies the delete first, so the update arrives for
        // a row that is gone there; it must still win everywhere.
        try mesh[1].execute("INSERT INTO public.accounts VALUES (20, 'x', 0)")
        mesh.expectEverywhere("20:x:0", where: "id = 20")
        try mesh.setLink(from: 3, to: 1, false); try mesh.setReceiving(2, false); try mesh.setReceiving(3, false)
        try mesh[2].execute("DELETE FROM public.accounts WHERE id = 20")
        #expect(waitUntil(timeout: 30) { try mesh.rows(1, where: "id = 20") == "" })
        try mesh[3].execute("UPDATE public.accounts SET owner = 'y' WHERE id = 20")
        try mesh.setLink(from: 3, to: 1, true); try mesh.setReceiving(2, true); try mesh.setReceiving(3, true)
        mesh.expectEverywhere("20:y:0", where: "id = 20")
        #expect(try mesh.conflictCount(1, where: "key = '{\"id\": 20}' AND kind = 'delete_update' AND winner = 'remote'") == 1)

        // A change arriving before the row's insert from a third node: n1 inserts,
        // n2 updates, n3 sees the update first.
        try mesh.setLink(from: 1, to: 3, false)
        try mesh[1].execute("INSERT INTO public.accounts VALUES (30, 'new', 0)")
        #expect(waitUntil(timeout: 30) { try mesh.rows(2, where: "id = 30") == "30:new:0" })
        try mesh[2].execute("UPDATE public.accounts SET balance = 5 WHERE id = 30")
        #expect(waitUntil(timeout: 30) { try mesh.rows(3, where: "id = 30") == "30:new:5" }, "the update arrives first and creates the row")
        try mesh.setLink(from: 1, to: 3, true)
        mesh.expectEverywhere("30:new:5", where: "id = 30")

        // Clock skew: n3's clock is 10 s behind, yet its causally later write wins.
        try mesh[1].execute("INSERT INTO public.accounts VALUES (40, 'n1', 0)")
        mesh.expectEverywhere("40:n1:0", where: "id = 40")
        let skewed = try mesh[3].connect()
        try skewed.execute("SET mmlite.clock_offset_ms = -10000; UPDATE public.accounts SET owner = 'n3 later' WHERE id = 40")
        skewed.close()
        mesh.expectEverywhere("40:n3 later:0", where: "id = 40")
        #expect(try mesh[1].scalar("SELECT v_node || ':' || v_counter FROM mmlite.\"public.accounts$versions\" WHERE id = 40") == "n3:1",
                "the skewed node took the physical time of the version it replaced and counted up")

        // Everything converged, versions included.
        #expect(mesh.quiesce())
        let fingerprints = try mesh.clusters.map { try $0.fingerprint(of: "public.accounts") }
        #expect(Set(fingerprints).count == 1, "\(fingerprints)")
        let versions = try mesh.clusters.map { try $0.scalar("SELECT string_agg(id || ':' || v_ms || '.' || v_counter || v_node || op, ',' ORDER BY id) FROM mmlite.\"public.accounts$versions\"") }
        #expect(Set(versions).count == 1, "\(versions)")
        let status = mesh.mmlite(["status", "--check"])
        #expect(status.code == 0 && status.out.contains("6/6 links ok"), "\(status)")

        // Control: the same update/update on the table that does not opt in diverges.
        try mesh[1].execute("INSERT INTO public.plain VALUES (11, 'base', 0)")
        mesh.expectEverywhere("11:base:0", where: "id = 11", table: "plain")
        try mesh.setReceiving(1, false); try mesh.setReceiving(2, false)
        try mesh[1].execute("UPDATE public.plain SET owner = 'n1' WHERE id = 11")
        try mesh[2].execute("UPDATE public.plain SET owner = 'n2' WHERE id = 11")
        try mesh.setReceiving(1, true); try mesh.setReceiving(2, true)
        #expect(mesh.quiesce())
        #expect(try mesh.rows(1, "plain") == "11:n2:0" && mesh.rows(2, "plain") == "11:n1:0",
                "without conflict handling each node keeps the other's value")
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")

        // Policy "error": a conflict stops the link; re-applying with
        // last-update-wins re-installs the trigger and the retried transaction goes through.
        try mesh.writeConflictConfig(policy: "error")
        let toError = mesh.mmlite(["apply"])
        #expect(toError.code == 0 && toError.out.contains("install conflict handling: public.accounts (error)"), "\(toError)")
        try mesh.setReceiving(1, false); try mesh.setReceiving(2, false)
        try mesh[1].execute("UPDATE public.accounts SET owner = 'e1' WHERE id = 11")
        try mesh[2].execute("UPDATE public.accounts SET owner = 'e2' WHERE id = 11")
        try mesh.setReceiving(1, true); try mesh.setReceiving(2, true)
        #expect(waitUntil(timeout: 30) { mesh.logErrors().contains { $0.contains("mmlite: conflict on public.accounts key {\"id\": 11}") } })
        #expect(try mesh.rows(1, where: "id = 11") == "11:e1:0", "n1 keeps its row while the link is stuck")
        try mesh.writeConflictConfig(policy: "last-update-wins")
        let toLastUpdateWins = mesh.mmlite(["apply"])
        #expect(toLastUpdateWins.code == 0, "\(toLastUpdateWins)")
        mesh.expectEverywhere("11:e2:0", where: "id = 11")
        #expect(mesh.mmlite(["apply"]).out.contains("Nothing to do"))

        // Opting in a live table: `plain` (diverged above) moves from the
        // publication to its change table; the next write repairs the row.
        try mesh.writeConfig(tables: ["public.accounts", "public.plain"], extraNodes: """

            [tables."public.accounts"]
            conflicts = "last-update-wins"

            [tables."public.plain"]
            conflicts = "last-update-wins"

            """)
        let optIn = mesh.mmlite(["apply"])
        #expect(optIn.code == 0 && optIn.out.contains("remove public.plain"), "\(optIn)")
        #expect(try mesh[2].scalar("SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY schemaname, tablename) FROM pg_publication_tables WHERE pubname = 'mmlite_shop'") == "mmlite.public.accounts$changes,mmlite.public.plain$changes")
        try mesh[3].execute("UPDATE public.plain SET balance = 7 WHERE id = 11")
        #expect(waitUntil(timeout: 30) { try (1...3).allSatisfy { try mesh.rows($0, "plain", where: "id = 11").hasSuffix(":7") } })
        #expect(try Set((1...3).map { try mesh.rows($0, "plain") }).count == 1, "n3's row replaced the diverged copies")
        #expect(mesh.mmlite(["apply"]).out.contains("Nothing to do"))
    }

    @Test("capture writes the same versions and change rows natively and in SQL: a multi-row insert, an update, a delete, a key-moving update (decided set-wise), a clock behind, a counter at its limit, a role without rights on mmlite's tables", arguments: conflictCases)
    func capture(_ conflictCase: ConflictCase) throws {
        let mesh = try TestMesh.conflictMesh(conflictCase)
        for index in 1...3 { #expect(try mesh.captureTriggerFunction(index) == conflictCase.expectedCaptureFunction) }
        try mesh.startAudit(1)
        let n1 = mesh[1]
        for statement in ["INSERT INTO public.accounts VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)",
                          "UPDATE public.accounts SET balance = balance + 10 WHERE id IN (1, 2)",
                          "DELETE FROM public.accounts WHERE id = 3",
                          // 1 -> 0, then 2 -> 1 in one statement: key 0 is inserted, key 1 updated (with b's row), key 2 deleted.
                          "UPDATE public.accounts SET id = id - 1 WHERE id IN (1, 2)"] {
            try n1.execute(statement)
            try n1.execute("SELECT pg_sleep(0.01)")     // one millisecond per statement: the order below
        }
        let versions = "SELECT string_agg(id || ':' || op || ':' || coalesce(prev_op, '-'), ',' ORDER BY id) FROM mmlite.\"public.accounts$versions\""
        #expect(try n1.scalar(versions) == "0:insert:-,1:update:update,2:delete:update,3:delete:insert")
        // What n1 sent, in version order (stored as change rows, or sent as change messages).
        let sent = try mesh.sentChanges(1)
        let changes = sent.filter { $0["mm_node"] == "n1" }
            .sorted { ($0["mm_v_ms"].flatMap { Int($0) } ?? 0, $0["mm_v_counter"].flatMap { Int($0) } ?? 0, $0["mm_op"] ?? "", $0["id"] ?? "")
                < ($1["mm_v_ms"].flatMap { Int($0) } ?? 0, $1["mm_v_counter"].flatMap { Int($0) } ?? 0, $1["mm_op"] ?? "", $1["id"] ?? "") }
            .map { [$0["mm_op"] ?? "?", $0["id"] ?? "?", $0["owner"] ?? "-", $0["balance"] ?? "-", String($0["mm_prev_node"] != nil)].joined(separator: ":") }
        #expect(changes.joined(separator: ",") == "insert:1:a:1:false,insert:2:b:2:false,insert:3:c:3:false,update:1:a:11:true,update:2:b:12:true,delete:3:-:-:true,delete:2:-:-:true,insert:0:a:11:false,update:1:b:12:true")
        // Stored unless every decoder takes change messages; the key-moving UPDATE's three go through the SQL function, which stores them.
        let stored = try mesh.storedChanges(1)
        #expect(stored == (conflictCase.changeMessages ? 3 : sent.count), "change rows stored: \(stored) of \(sent.count)")
        mesh.expectEverywhere("0:a:11,1:b:12", where: "true")

        // A clock behind the key's version: the same ms, the counter one up (a causally later write wins anyway).
        let before = try n1.scalar("SELECT v_ms || ':' || v_counter FROM mmlite.\"public.accounts$versions\" WHERE id = 1") ?? ""
        let parts = before.split(separator: ":")
        try n1.execute("BEGIN; SET LOCAL mmlite.clock_offset_ms = -3600000; UPDATE public.accounts SET owner = 'behind' WHERE id = 1; COMMIT")
        #expect(try n1.scalar("SELECT v_ms || ':' || v_counter FROM mmlite.\"public.accounts$versions\" WHERE id = 1") == "\(parts[0]):\(Int(parts[1])! + 1)")
        mesh.expectEverywhere("0:a:11,1:behind:12", where: "true")

        // A counter at its limit: the write fails (integer out of range) and changes nothing.
        try n1.execute("UPDATE mmlite.\"public.accounts$versions\" SET v_counter = 2147483647 WHERE id = 1")
        var overflow: PGError?
        do { try n1.execute("BEGIN; SET LOCAL mmlite.clock_offset_ms = -3600000; UPDATE public.accounts SET owner = 'lost' WHERE id = 1; COMMIT") } catch let error as PGError { overflow = error }
        #expect(overflow?.sqlState == "22003", "\(String(describing: overflow))")
        #expect(try n1.scalar("SELECT owner FROM public.accounts WHERE id = 1") == "behind")

        // A role that may write the table but not mmlite's tables is refused as by SQL (42501); granted, it writes.
        try n1.execute("CREATE ROLE capture_app LOGIN; GRANT ALL ON public.accounts TO capture_app")
        let app = try n1.connect(overrides: ["user": "capture_app"])
        defer { app.close() }
        var denied: PGError?
        do { try app.execute("INSERT INTO public.accounts VALUES (20, 'app', 0)") } catch let error as PGError { denied = error }
        #expect(denied?.sqlState == "42501", "\(String(describing: denied))")
        try n1.execute("""
            GRANT USAGE ON SCHEMA mmlite TO capture_app;
            GRANT SELECT, INSERT, UPDATE ON mmlite."public.accounts$versions" TO capture_app;
            GRANT INSERT ON mmlite."public.accounts$changes" TO capture_app
            """)
        try app.execute("INSERT INTO public.accounts VALUES (20, 'app', 0)")
        mesh.expectEverywhere("0:a:11,1:behind:12,20:app:0", where: "true")
        // An upsert fires the insert and the update trigger, one over an empty transition table: a new key, then an existing one.
        for (key, balance) in [(21, 1), (20, 2)] {
            try app.execute("INSERT INTO public.accounts VALUES (\(key), 'upsert', \(balance)) ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, balance = EXCLUDED.balance")
        }
        #expect(try n1.scalar("SELECT string_agg(id || ':' || op, ',' ORDER BY id) FROM mmlite.\"public.accounts$versions\" WHERE id >= 20") == "20:update,21:insert")
        mesh.expectEverywhere("0:a:11,1:behind:12,20:upsert:2,21:upsert:1", where: "true")
        #expect(try mesh.conflictCount(1) + mesh.conflictCount(2) + mesh.conflictCount(3) == 0, "causal writes are not conflicts")
    }

    @Test("a tombstone that `conflicts prune` locks and deletes while a local insert of its key reads it: the insert waits and gives the key a new version (no 'tuple concurrently deleted')", arguments: conflictCases)
    func pruneRace(_ conflictCase: ConflictCase) throws {
        let mesh = try TestMesh.conflictMesh(conflictCase)
        #expect(try mesh.captureTriggerFunction(1) == conflictCase.expectedCaptureFunction)
        try mesh[1].execute("INSERT INTO public.accounts VALUES (30, 'first', 1)")
        try mesh[1].execute("DELETE FROM public.accounts WHERE id = 30")
        mesh.expectEverywhere("", where: "id = 30")
        // A prune of this key held open: the tombstone locked (a reader still sees it), deleted later.
        let pruner = try mesh[1].connect()
        defer { pruner.close() }
        try pruner.execute("BEGIN; SELECT FROM mmlite.\"public.accounts$versions\" WHERE id = 30 AND op = 'delete' FOR UPDATE")
        let insert = BackgroundStatement(try mesh[1].connect(), "INSERT INTO public.accounts VALUES (30, 'again', 2)")
        let waiting = waitUntil(timeout: 30) {
            try mesh[1].scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO public.accounts%'") == "1"
        }
        #expect(waiting, "the insert waits for the tombstone's lock")
        try pruner.execute("DELETE FROM mmlite.\"public.accounts$versions\" WHERE id = 30 AND op = 'delete'; COMMIT")
        #expect(insert.wait())
        #expect(insert.succeeded, "the insert commits")
        #expect(try mesh[1].scalar("SELECT op || ':' || (prev_op IS NULL)::text FROM mmlite.\"public.accounts$versions\" WHERE id = 30") == "insert:true",
                "a new version row: the tombstone was pruned first")
        mesh.expectEverywhere("30:again:2", where: "id = 30")
    }

    @Test("an arriving insert of a key a local statement is inserting waits for it (no duplicate-key error), then resolves like any insert/insert", arguments: conflictCases)
    func insertRace(_ conflictCase: ConflictCase) throws {
        let mesh = try TestMesh.conflictMesh(conflictCase)
        for index in 1...3 {
            #expect(try mesh.applyTriggerFunction(index) == conflictCase.expectedTriggerFunction)
            #expect(try mesh.captureTriggerFunction(index) == conflictCase.expectedCaptureFunction)
        }
        // A local insert on n2 that stops after writing its row, before mmlite's capture writes
        // the version (AFTER ROW triggers fire before AFTER STATEMENT ones), until `gate` lets go.
        try mesh[2].execute("""
            CREATE FUNCTION public.hold() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_lock_shared(4242); PERFORM pg_advisory_unlock_shared(4242); RETURN NULL; END $$;
            CREATE TRIGGER hold AFTER INSERT ON public.accounts FOR EACH ROW WHEN (NEW.owner = 'held') EXECUTE FUNCTION public.hold();
            """)
        let gate = try mesh[2].connect()
        try gate.execute("SELECT pg_advisory_lock(4242)")
        try mesh.setLink(from: 1, to: 2, false)
        try mesh[1].execute("INSERT INTO public.accounts VALUES (20, 'from n1', 1)")
        let insert = BackgroundStatement(try mesh[2].connect(), "INSERT INTO public.accounts VALUES (20, 'held', 2)")
        let held = waitUntil(timeout: 30) {
            try mesh[2].scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'") == "1"
        }
        #expect(held, "the local insert holds its row, without a version yet")
        // n1's insert of the same key arrives meanwhile and meets the row in flight: the native trigger's
        // speculative insertion conflicts and hands over to SQL, whose INSERT ... ON CONFLICT waits for it.
        try mesh.setLink(from: 1, to: 2, true)
        let waiting = waitUntil(timeout: 30) {
            try mesh[2].scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'logical replication%' AND wait_event = 'transactionid'") == "1"
        }
        #expect(waiting, "n2's apply worker waits for the local insert of key 20")
        try gate.execute("SELECT pg_advisory_unlock(4242)")
        #expect(insert.wait())
        #expect(insert.succeeded, "the local insert commits")
        // n2 wrote later: its row wins everywhere; each side logged the insert/insert once.
        mesh.expectEverywhere("20:held:2", where: "id = 20")
        #expect(mesh.quiesce())
        #expect(try mesh.conflictCount(2, where: "key = '{\"id\": 20}' AND kind = 'insert_insert' AND winner = 'local'") == 1)
        #expect(try mesh.conflictCount(1, where: "key = '{\"id\": 20}' AND kind = 'insert_insert' AND winner = 'remote'") == 1)
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")
    }

    @Test("apply runs a step again that PostgreSQL rolled back for a deadlock: re-installing conflict handling takes the version table, then waits for the change table, which a transaction holds that then reads the version table (as an apply worker retrying a stuck change does)")
    func applyRetriesDeadlock() throws {
        let mesh = try TestMesh.conflictMesh()
        let holder = try mesh[1].connect()
        try holder.execute("BEGIN; LOCK TABLE mmlite.\"public.accounts$changes\" IN ROW EXCLUSIVE MODE")
        try mesh.writeConflictConfig(policy: "keep-local")
        let result = Unchecked(ResultBox())
        let meshBox = Unchecked(mesh)
        let done = DispatchSemaphore(value: 0)
        Thread { result.value.run = meshBox.value.mmlite(["apply"]); done.signal() }.start()
        let waiting = waitUntil(timeout: 30) {
            try mesh[1].scalar("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'mmlite.\"public.accounts$changes\"'::regclass") == "1"
        }
        try #require(waiting, "apply waits for the change table on n1")
        // The cycle: PostgreSQL's deadlock check (deadlock_timeout, 1 s) runs first in apply's
        // backend, which waited first, and rolls its step back; the holder's read then goes on.
        let reader = BackgroundStatement(holder, "SELECT count(*) FROM mmlite.\"public.accounts$versions\"")
        #expect(reader.wait() && reader.succeeded, "the holder's read went on")
        #expect(done.wait(timeout: .now() + 60) == .success, "apply finished")
        let run = try #require(result.value.run)
        #expect(run.code == 0, "\(run)")
        #expect(run.out.contains("deadlock detected; running it again (attempt 2 of 5)"), "\(run)")
        for index in 1...3 {
            #expect(try mesh[index].scalar("SELECT policy FROM mmlite.conflict_tables WHERE table_name = 'public.accounts'") == "keep-local")
        }
        #expect(mesh.logErrors().count { $0.contains("deadlock detected") } == 1, "\(mesh.logErrors())")
    }

    @Test("random concurrent writers on the same keys, one clock 3 s behind, 5 seeds: every node converges and every lost version is in a conflict log; the same writes without opting in do not converge", arguments: conflictCases)
    func randomWriters(_ conflictCase: ConflictCase) throws {
        let mesh = try TestMesh.conflictMesh(conflictCase)
        for index in 1...3 {
            #expect(try mesh.applyTriggerFunction(index) == conflictCase.expectedTriggerFunction)
            #expect(try mesh.captureTriggerFunction(index) == conflictCase.expectedCaptureFunction)
            try mesh.startAudit(index)
        }
        let conninfos = mesh.clusters.map(\.conninfo)
        var allWrites = 0
        for seed in 1...5 {
            let base = seed * 100
            // Live links, then cut-off links (every node writes blind, so many conflicts).
            for paused in [false, true] {
                if paused { for index in 1...3 { try mesh.setReceiving(index, false) } }
                let counts = try randomWorkload(conninfos: conninfos, table: "accounts", seed: UInt64(seed * 2 + (paused ? 1 : 0)), base: base, operations: 40)
                allWrites += counts
                if paused { for index in 1...3 { try mesh.setReceiving(index, true) } }
            }
            #expect(mesh.quiesce(), "seed \(seed): every link caught up")
            let prints = try mesh.clusters.map { try $0.fingerprint(of: "public.accounts") }
            #expect(Set(prints).count == 1, "seed \(seed): \(prints)\n\(divergenceReport(mesh.clusters, table: "public.accounts"))")
        }
        #expect(allWrites > 300)
        let versions = try mesh.clusters.map { try $0.scalar("SELECT string_agg(id || ':' || v_ms || '.' || v_counter || v_node || op, ',' ORDER BY id) FROM mmlite.\"public.accounts$versions\"") }
        #expect(Set(versions).count == 1, "versions converge too")
        // Writers on the same keys as an apply worker may deadlock with it (40P01):
        // PostgreSQL rolls one side back, the workload skips its statement, an
        // apply worker retries its transaction. Any other ERROR fails the test.
        let errors = mesh.logErrors()
        let deadlocks = errors.filter { $0.contains(" ERROR:  deadlock detected") }
        if !deadlocks.isEmpty { print("ConflictTests: \(deadlocks.count) deadlock(s) between writers and apply workers, resolved by PostgreSQL") }
        #expect(errors.count == deadlocks.count, "\(errors)")

        // Every version ever written is the final one of its key, or was
        // overwritten by a write made on top of it, or lost a conflict that
        // some node logged.
        func set(_ sql: String) throws -> Set<String> {
            try mesh.clusters.reduce(into: Set<String>()) { result, cluster in
                for row in try cluster.execute(sql).rows { result.insert(row.map { $0 ?? "" }.joined(separator: "|")) }
            }
        }
        // Every write each node sent (stored as change rows, or sent as change messages).
        let sent = try (1...3).flatMap { try mesh.sentChanges($0) }
        let stored = try (1...3).reduce(0) { $0 + (try mesh.storedChanges($1)) }
        #expect(stored == (conflictCase.changeMessages ? 0 : sent.count), "change rows stored: \(stored)")
        let written = Set(sent.map { [$0["id"], $0["mm_v_ms"], $0["mm_v_counter"], $0["mm_node"]].map { $0 ?? "" }.joined(separator: "|") })
        let replaced = Set(sent.filter { $0["mm_prev_ms"] != nil }.map { [$0["id"], $0["mm_prev_ms"], $0["mm_prev_counter"], $0["mm_prev_node"]].map { $0 ?? "" }.joined(separator: "|") })
        let final = try set("SELECT id::text, v_ms, v_counter, v_node FROM mmlite.\"public.accounts$versions\"")
        let lost = try set("""
            SELECT key->>'id', v->>'ms', v->>'counter', v->>'node' FROM mmlite.conflicts,
                   LATERAL (SELECT CASE winner WHEN 'remote' THEN local_version ELSE remote_version END) x(v)
            WHERE table_name = 'public.accounts'
            """)
        #expect(written.count == allWrites, "the nodes sent every local write (\(written.count) of \(allWrites) statements)")
        print("ConflictTests: \(written.count) writes, \(final.count) keys, \(replaced.count) overwritten in order, \(lost.count) lost a conflict")
        let unaccounted = written.subtracting(final).subtracting(replaced).subtracting(lost)
        #expect(unaccounted.isEmpty, "versions neither final, nor replaced, nor logged: \(unaccounted.sorted().prefix(10))")
        #expect(lost.intersection(final).isEmpty, "a logged loser is never the final version")
        #expect(lost.count > 20, "the cut-off phases produced conflicts (\(lost.count))")

        // Pruning: change rows are not needed once committed (decoding reads WAL).
        for cluster in mesh.clusters { try cluster.execute(ConflictSQL.prune(QualifiedName(schema: "public", name: "accounts"))) }
        try mesh[1].execute("INSERT INTO public.accounts VALUES (9999, 'after prune', 0)")
        mesh.expectEverywhere("9999:after prune:0", where: "id = 9999")

        // The control: the same kind of writes on the table that does not opt
        // in diverge or stop replication.
        for index in 1...3 { try mesh.setReceiving(index, false) }
        _ = try randomWorkload(conninfos: conninfos, table: "plain", seed: 1, base: 0, operations: 40)
        for index in 1...3 { try mesh.setReceiving(index, true) }
        let stopped = waitUntil(timeout: 15) { mesh.logErrors().contains { $0.contains("duplicate key value") || $0.contains("conflict=insert_exists") } }
        print("ConflictTests: without conflict handling: \(stopped ? "replication stopped on a duplicate key" : "checking divergence")")
        if !stopped {
            #expect(mesh.quiesce())
            let prints = try mesh.clusters.map { try $0.fingerprint(of: "public.plain") }
            #expect(Set(prints).count > 1, "without conflict handling the nodes diverge")
        }
    }
}

/// Three writers at once (one per node, node 3 with its clock 3 s behind),
/// each `operations` random upserts, updates and deletes over 20 keys from
/// `base`. Returns how many statements changed a row.
func randomWorkload(conninfos: [String], table: String, seed: UInt64, base: Int, operations: Int) throws -> Int {
    try concurrentWriters(conninfos: conninfos) { index, connection in
        var random = SplitMix64(seed: seed &* 31 &+ UInt64(index))
        var changed = 0
        for step in 0..<operations {
            let key = base + Int(random.next() % 20)
            let roll = random.next() % 10
            let sql: String
            if roll < 4 {
                sql = "INSERT INTO public.\(table) VALUES (\(key), 'n\(index + 1)-\(step)', \(step)) ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, balance = EXCLUDED.balance"
            } else if roll < 8 {
                sql = "UPDATE public.\(table) SET owner = 'n\(index + 1)-\(step)', balance = balance + 1 WHERE id = \(key)"
            } else {
                sql = "DELETE FROM public.\(table) WHERE id = \(key)"
            }
            // A deadlock with an apply worker (rare) rolls the statement back; skip it.
            if let result = try? connection.execute(sql), (result.affectedRows ?? 0) > 0 { changed += 1 }
        }
        return changed
    }.reduce(0, +)
}

/// One writer thread per node at once, each on its own connection (node 3's,
/// index 2, with its clock 3 s behind); returns each writer's result, in node order.
func concurrentWriters<T>(conninfos: [String], _ write: @escaping @Sendable (Int, PGConnection) -> T) throws -> [T] {
    let results = WriterResults<T>()
    let finished = DispatchSemaphore(value: 0)
    for (index, conninfo) in conninfos.enumerated() {
        let thread = Thread {
            defer { finished.signal() }
            guard let connection = try? PGConnection(conninfo) else {
                results.lock.lock(); results.failures += 1; results.lock.unlock(); return
            }
            defer { connection.close() }
            if index == 2 { _ = try? connection.execute("SET mmlite.clock_offset_ms = -3000") }
            let value = write(index, connection)
            results.lock.lock(); results.values[index] = value; results.lock.unlock()
        }
        thread.stackSize = 4 << 20
        thread.start()
    }
    for _ in conninfos { finished.wait() }
    if results.failures > 0 { throw HarnessError("a writer could not connect") }
    return conninfos.indices.compactMap { results.values[$0] }
}

/// What `concurrentWriters`' threads hand back, under its lock.
final class WriterResults<R>: @unchecked Sendable {
    let lock = NSLock()
    var values: [Int: R] = [:]
    var failures = 0
}

/// One statement run on its own thread, for a writer the test holds at a
/// lock: `wait` until it finished, then `succeeded`. It takes the connection
/// and closes it when the statement ends (also after a test gave up waiting).
final class BackgroundStatement: @unchecked Sendable {
    private let finished = DispatchSemaphore(value: 0)
    private(set) var succeeded = false

    init(_ connection: PGConnection, _ sql: String) {
        let connection = Unchecked(connection)
        let thread = Thread { [self] in
            succeeded = (try? connection.value.execute(sql)) != nil
            connection.value.close()
            finished.signal()
        }
        thread.stackSize = 4 << 20
        thread.start()
    }

    /// Whether it finished within `timeout` seconds.
    func wait(timeout: Double = 30) -> Bool { finished.wait(timeout: .now() + timeout) == .success }
}

/// A run handed back from another thread.
final class ResultBox: @unchecked Sendable {
    var run: Run?
}

/// A small seeded generator (SplitMix64): the same seed, the same writes.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}
