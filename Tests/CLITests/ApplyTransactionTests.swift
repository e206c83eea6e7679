import ClusterHarness
import Foundation
import MMLiteCore
import PostgresClient
import Testing

/// The native apply trigger keeps its tables, executor state and slots open
/// for the whole local transaction that applies one remote transaction
/// (mmlite_apply.c, tables_for). This drives one long remote transaction
/// through it: changes applied natively, one handed to SQL in the middle, the
/// apply paused on a row lock while both tables' relcache entries are
/// invalidated, then resumed.
@Suite("native apply: one remote transaction of many changes", .enabled(if: !conflictInstallations.isEmpty), .serialized)
struct ApplyTransactionTests {
    @Test("one remote transaction of 160 changes (updates, inserts, deletes, a conflict decided in SQL in the middle), paused on a row lock while ANALYZE invalidates its tables: every node converges, the conflict is logged, no errors",
          arguments: conflictInstallations)
    func longTransaction(_ pg: PGInstallation) throws {
        let mesh = try TestMesh.conflictMesh(installation: pg)
        #expect(try mesh.applyTriggerFunction(2) == "mmlite.apply_change")
        try mesh[1].execute("INSERT INTO public.accounts SELECT g, 'start', 0 FROM generate_series(1, 100) g")
        #expect(waitUntil(timeout: 30) { try (1...3).allSatisfy { try mesh[$0].scalar("SELECT count(*) FROM public.accounts") == "100" } })

        // Row 50 written on n2 and on n1 while neither hears the other: on n2,
        // n1's update arrives on top of a version n2 no longer has (SQL decides).
        try mesh.setReceiving(1, false)
        try mesh.setReceiving(2, false)
        try mesh[2].execute("UPDATE public.accounts SET owner = 'n2 local' WHERE id = 50")
        let holder = try mesh[2].connect()
        defer { holder.close() }
        try holder.execute("BEGIN")
        try holder.execute("SELECT * FROM public.accounts WHERE id = 80 FOR UPDATE")
        try mesh[1].execute("""
            BEGIN;
            UPDATE public.accounts SET owner = 'n1 txn', balance = balance + 1;
            INSERT INTO public.accounts SELECT g, 'n1 new', g FROM generate_series(101, 150) g;
            DELETE FROM public.accounts WHERE id BETWEEN 20 AND 29;
            COMMIT
            """)
        try mesh.setLink(from: 1, to: 2, true)
        let waiting = waitUntil(timeout: 30) {
            try mesh[2].scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'logical replication%' AND wait_event_type = 'Lock'") == "1"
        }
        #expect(waiting, "n2's apply worker waits for row 80, part-way through the transaction")
        // Relcache invalidations of both tables while the transaction holds them open.
        try mesh[2].execute("ANALYZE public.accounts")
        try mesh[2].execute("ANALYZE mmlite.\"public.accounts$versions\"")
        try holder.execute("ROLLBACK")
        try mesh.setReceiving(1, true)
        try mesh.setReceiving(2, true)

        #expect(mesh.quiesce(), "every link caught up")
        // 100 updated, 10 of them deleted, 50 inserted: every row is n1's transaction's.
        let expected = "140 rows, 140 from n1's transaction"
        for index in 1...3 {
            let summary = try mesh[index].scalar("""
                SELECT count(*) || ' rows, ' || count(*) FILTER (WHERE owner IN ('n1 txn', 'n1 new')) || ' from n1''s transaction' FROM public.accounts
                """)
            #expect(summary == expected, "n\(index): \(summary ?? "?")")
        }
        mesh.expectEverywhere("50:n1 txn:1,80:n1 txn:1,101:n1 new:101", where: "id IN (50, 80, 101)")
        let prints = try mesh.clusters.map { try $0.fingerprint(of: "public.accounts") }
        #expect(Set(prints).count == 1, "\(prints)")
        #expect(try mesh.conflictCount(2) >= 1, "n2 logged that its own update of row 50 lost")
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")
        // What the transaction kept open it closed before committing (else: "relcache reference leak").
        let leaks = mesh.clusters.flatMap { $0.serverLog().split(separator: "\n").filter { $0.contains("leak") } }
        #expect(leaks.isEmpty, "\(leaks)")
    }

    @Test("a session that fires the apply trigger itself (session_replication_role = replica) over several statements commits cleanly: only apply workers keep the tables open (a session's statements own what they open)",
          arguments: conflictInstallations)
    func session(_ pg: PGInstallation) throws {
        let mesh = try TestMesh.conflictMesh(installation: pg)
        #expect(try mesh.applyTriggerFunction(1) == "mmlite.apply_change")
        let session = try mesh[1].connect()
        defer { session.close() }
        try session.execute("BEGIN; SET LOCAL session_replication_role = replica")
        for id in [77, 78] {
            try session.execute("""
                INSERT INTO mmlite."public.accounts$changes" (mm_node, mm_op, mm_v_ms, mm_v_counter, id, owner, balance)
                VALUES ('elsewhere', 'insert', 1, 0, \(id), 'by hand', \(id))
                """)
        }
        var committed = true
        do { try session.execute("COMMIT") } catch { committed = false; Issue.record("\(error)") }
        #expect(committed)
        #expect(try mesh.rows(1, where: "id IN (77, 78)") == "77:by hand:77,78:by hand:78")
        let leaks = mesh[1].serverLog().split(separator: "\n").filter { $0.contains("leak") }
        #expect(leaks.isEmpty, "\(leaks)")
    }
}
