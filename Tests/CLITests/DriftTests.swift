import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import PostgresClient
import Testing

/// Issue 15, items 2 and 3: a schema change made by hand is never healthy in
/// `status`, and TRUNCATE of an opted-in table is never silently local. On
/// every PostgreSQL 15 and 18 in `MMLITE_PG_CONFIGS`, 3-node mesh with a
/// plain and a last-update-wins table (`conflictMesh`).
@Suite("schema drift and TRUNCATE on a 3-node mesh", .enabled(if: !conflictInstallations.isEmpty), .serialized)
struct DriftTests {
    /// status --format json, parsed.
    func statusJSON(_ mesh: TestMesh) throws -> [String: Any] {
        let run = mesh.mmlite(["status", "--format", "json"])
        return try #require(try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any], "\(run)")
    }

    /// Every link and node is fine: only drift can make the state anything but ok
    /// (which is what status said before it looked at schemas).
    func expectLinksHealthy(_ json: [String: Any], sourceLocation: SourceLocation = #_sourceLocation) {
        let links = json["links"] as? [[String: Any]] ?? []
        let nodes = json["nodes"] as? [[String: Any]] ?? []
        #expect(links.count == 6 && links.allSatisfy { $0["state"] as? String == "ok" }, "\(links)", sourceLocation: sourceLocation)
        #expect(nodes.count == 3 && nodes.allSatisfy { $0["reachable"] as? Bool == true }, sourceLocation: sourceLocation)
    }

    func notes(_ mesh: TestMesh, _ index: Int, _ table: String) throws -> String {
        try mesh[index].scalar("SELECT coalesce(string_agg(id || '=' || note, ',' ORDER BY id), '') FROM public.\(table) WHERE note IS NOT NULL") ?? "?"
    }

    @Test("ALTER TABLE by hand: on one node, CRITICAL naming the table and the column; on every node, CRITICAL naming the opted-in table's stale conflict handling (writes to the new column diverge); apply reinstalls it and the column replicates", arguments: conflictInstallations)
    func manualAlter(_ pg: PGInstallation) throws {
        let mesh = try TestMesh.conflictMesh(installation: pg)
        for table in ["accounts", "plain"] { try mesh[1].execute("INSERT INTO public.\(table) VALUES (2, 'bob', 20)") }
        mesh.expectEverywhere("2:bob:20", where: "id = 2")
        mesh.expectEverywhere("2:bob:20", where: "id = 2", table: "plain")
        #expect(waitUntil(timeout: 30) { mesh.mmlite(["status", "--check"]).code == 0 })

        // On one node only.
        for table in ["accounts", "plain"] { try mesh[3].execute("ALTER TABLE public.\(table) ADD COLUMN note text") }
        let one = mesh.mmlite(["status", "--check"])
        show(one)
        #expect(one.code == 2, "\(one)")
        #expect(one.out.contains("Mesh shop: CRITICAL"), "\(one)")
        #expect(one.out.contains("public.plain: column note exists on n3 but not on n1, n2 (critical); fix: on n1, n2: ALTER TABLE public.plain ADD COLUMN note text;"), "\(one)")
        #expect(one.out.contains("public.accounts: column note exists on n3 but not on n1, n2"), "\(one)")
        #expect(one.out.contains("public.accounts on n3: conflict handling was installed for other columns (note added since)"), "\(one)")
        expectLinksHealthy(try statusJSON(mesh))
        let doctor = mesh.mmlite(["doctor"])
        #expect(doctor.code == 2 && doctor.out.contains("public.plain differs from n1: column note exists only here, not on n1"), "\(doctor)")

        // On the others too: the same columns everywhere, conflict handling stale everywhere.
        for index in 1...2 { for table in ["accounts", "plain"] { try mesh[index].execute("ALTER TABLE public.\(table) ADD COLUMN note text") } }
        for table in ["accounts", "plain"] {
            try mesh[1].execute("INSERT INTO public.\(table) VALUES (1, 'ann', 10, 'from n1')")
            try mesh[2].execute("UPDATE public.\(table) SET note = 'from n2' WHERE id = 2")
        }
        #expect(waitUntil(timeout: 30) { try (1...3).allSatisfy { try notes(mesh, $0, "plain") == "1=from n1,2=from n2" } }, "the plain table converges")
        #expect(mesh.quiesce())
        #expect(try (1...3).map { try notes(mesh, $0, "accounts") } == ["1=from n1", "2=from n2", ""],
                "the opted-in table diverged: each node kept only its own note")
        let stale = mesh.mmlite(["status", "--check"])
        show(stale)
        #expect(stale.code == 2, "\(stale)")
        for node in ["n1", "n2", "n3"] {
            #expect(stale.out.contains("public.accounts on \(node): conflict handling was installed for other columns (note added since): values written to note are not replicated (critical); fix: mmlite apply reinstalls it"), "\(stale)")
        }
        #expect(!stale.out.contains("public.plain:"), "no drift left on the plain table\n\(stale)")
        let staleDoctor = mesh.mmlite(["doctor"])
        #expect(staleDoctor.code == 2 && staleDoctor.out.contains("FAIL  conflict_handling"), "\(staleDoctor)")
        #expect(staleDoctor.out.contains("public.accounts on n2: conflict handling was installed for other columns (note added since)"), "\(staleDoctor)")
        let json = try statusJSON(mesh)
        expectLinksHealthy(json)
        #expect(json["state"] as? String == "critical")
        let drift = json["drift"] as? [[String: Any]] ?? []
        #expect(drift.count == 3 && drift.allSatisfy { $0["table"] as? String == "public.accounts" && $0["kind"] as? String == "conflicts_stale" && $0["state"] as? String == "critical" }, "\(drift)")

        // apply reinstalls it; rewriting the notes replicates them.
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 0 && apply.out.contains("install conflict handling: public.accounts (last-update-wins)"), "\(apply)")
        #expect(mesh.mmlite(["status", "--check"]).code == 0)
        try mesh[1].execute("UPDATE public.accounts SET note = note WHERE note IS NOT NULL")
        try mesh[2].execute("UPDATE public.accounts SET note = note WHERE note IS NOT NULL")
        try mesh[3].execute("INSERT INTO public.accounts VALUES (3, 'cy', 30, 'from n3')")
        #expect(waitUntil(timeout: 30) { try (1...3).allSatisfy { try notes(mesh, $0, "accounts") == "1=from n1,2=from n2,3=from n3" } },
                "\((1...3).map { (try? notes(mesh, $0, "accounts")) ?? "?" })")
        #expect(mesh.quiesce())
        #expect(Set(try mesh.clusters.map { try $0.fingerprint(of: "public.accounts") }).count == 1)

        // A type changed on one node.
        try mesh[2].execute("ALTER TABLE public.plain ALTER COLUMN balance TYPE bigint")
        let retyped = mesh.mmlite(["status", "--check"])
        #expect(retyped.code == 2 && retyped.out.contains("public.plain: column balance is integer on n1, n3 but bigint on n2"), "\(retyped)")
        try mesh[2].execute("ALTER TABLE public.plain ALTER COLUMN balance TYPE integer")
        let healed = mesh.mmlite(["status", "--check"])
        #expect(healed.code == 0, "\(healed)")
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")
    }

    @Test("TRUNCATE of an opted-in table on one node, with writers on the others: refused (feature_not_supported), nothing changed anywhere; DELETE empties it everywhere; a plain table's TRUNCATE still replicates", arguments: conflictInstallations)
    func truncate(_ pg: PGInstallation) throws {
        let mesh = try TestMesh.conflictMesh(installation: pg)
        for table in ["accounts", "plain"] { try mesh[1].execute("INSERT INTO public.\(table) SELECT g, 'row', g FROM generate_series(1, 50) g") }
        for table in ["accounts", "plain"] {
            #expect(waitUntil(timeout: 30) { try (1...3).allSatisfy { try mesh[$0].scalar("SELECT count(*) FROM public.\(table)") == "50" } })
        }
        // Writers on n2 and n3 meanwhile (keys from 1000).
        let conninfos = [mesh[2].conninfo, mesh[3].conninfo]
        let written = DispatchSemaphore(value: 0)
        let writes = Unchecked(NSMutableArray())
        let thread = Thread {
            let count = (try? randomWorkload(conninfos: conninfos, table: "accounts", seed: 7, base: 1000, operations: 150)) ?? -1
            writes.value.add(count)
            written.signal()
        }
        thread.start()
        var refusals: [PGError] = []
        for _ in 0..<3 {
            do {
                try mesh[1].execute("TRUNCATE public.accounts")
            } catch let error as PGError {
                refusals.append(error)
            }
            usleep(100_000)
        }
        written.wait()
        #expect((writes.value.firstObject as? Int ?? 0) > 0, "the writers wrote")
        #expect(refusals.count == 3, "every TRUNCATE refused")
        let refusal = try #require(refusals.first)
        #expect(refusal.sqlState == "0A000", "\(refusal)")
        #expect(refusal.message.contains("TRUNCATE of public.accounts is not replicated with last-update-wins: use DELETE FROM public.accounts (replicated row by row), or mmlite ddl \"TRUNCATE public.accounts\" to empty it on every node at once"), "\(refusal)")
        #expect(mesh.quiesce())
        let prints = try mesh.clusters.map { try $0.fingerprint(of: "public.accounts") }
        #expect(Set(prints).count == 1, "every node identical: \(prints)")
        for index in 1...3 { #expect(try mesh[index].scalar("SELECT count(*) FROM public.accounts WHERE id <= 50") == "50", "n\(index) kept its rows") }
        // TRUNCATE ... CASCADE reaching it is refused too.
        try mesh[1].execute("""
            CREATE TABLE public.parent (id int PRIMARY KEY); INSERT INTO public.parent SELECT generate_series(-1000, 1000);
            ALTER TABLE public.accounts ADD CONSTRAINT accounts_parent FOREIGN KEY (balance) REFERENCES public.parent
            """)
        var cascade: PGError?
        do { try mesh[1].execute("TRUNCATE public.parent CASCADE") } catch let error as PGError { cascade = error }
        #expect(cascade?.sqlState == "0A000", "\(String(describing: cascade))")
        try mesh[1].execute("ALTER TABLE public.accounts DROP CONSTRAINT accounts_parent; DROP TABLE public.parent")
        #expect(try mesh[1].scalar("SELECT count(*) FROM public.accounts WHERE id <= 50") == "50")
        // Sessions with session_replication_role = replica (the apply worker,
        // join's copy) are not stopped.
        let replica = try mesh[1].connect()
        try replica.execute("BEGIN; SET LOCAL session_replication_role = replica; TRUNCATE public.accounts; ROLLBACK")
        // Nor a transaction that says it empties it on every node at once (mmlite ddl).
        try replica.execute("BEGIN; \(ConflictSQL.allowTruncate); TRUNCATE public.accounts; ROLLBACK")
        replica.close()

        // What the refusal recommends: DELETE, replicated row by row.
        try mesh[1].execute("DELETE FROM public.accounts")
        #expect(waitUntil(timeout: 30) { try (1...3).allSatisfy { try mesh[$0].scalar("SELECT count(*) FROM public.accounts") == "0" } })
        // A plain table's TRUNCATE replicates as before.
        try mesh[1].execute("TRUNCATE public.plain")
        #expect(waitUntil(timeout: 30) { try (1...3).allSatisfy { try mesh[$0].scalar("SELECT count(*) FROM public.plain") == "0" } })
        #expect(mesh.mmlite(["status", "--check"]).code == 0)
        let errors = mesh.logErrors().filter { !$0.contains("TRUNCATE of public.accounts is not replicated") }
        #expect(errors.isEmpty, "no error but the refusals: \(errors)")
    }

    @Test("a column dropped or retyped by hand on every node: CRITICAL; apply fixes the dropped one (local writes failed until then), not the retyped one, whose fix (the change table's ALTER, then apply) works", arguments: conflictInstallations)
    func droppedAndRetyped(_ pg: PGInstallation) throws {
        let mesh = try TestMesh.conflictMesh(installation: pg)
        try mesh[1].execute("INSERT INTO public.accounts VALUES (1, 'ann', 10)")
        mesh.expectEverywhere("1:ann:10", where: "id = 1")
        #expect(waitUntil(timeout: 30) { mesh.mmlite(["status", "--check"]).code == 0 }, "every link runs")
        for index in 1...3 { try mesh[index].execute("ALTER TABLE public.accounts DROP COLUMN owner") }
        var failed: PGError?
        do { try mesh[1].execute("INSERT INTO public.accounts VALUES (2, 20)") } catch let error as PGError { failed = error }
        #expect(failed?.sqlState == "42703", "the capture function names the dropped column: \(String(describing: failed))")
        let dropped = mesh.mmlite(["status", "--check"])
        #expect(dropped.code == 2, "\(dropped)")
        #expect(dropped.out.contains("public.accounts on n1: conflict handling was installed for other columns (owner dropped since): local writes to the table fail (critical); fix: mmlite apply reinstalls it"), "\(dropped)")
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 0, "\(apply)")
        #expect(mesh.mmlite(["status", "--check"]).code == 0, "the change table keeps owner, unused: not drift")
        try mesh[1].execute("INSERT INTO public.accounts VALUES (2, 20)")
        try mesh[2].execute("UPDATE public.accounts SET balance = 11 WHERE id = 1")
        func balances(_ index: Int) throws -> String { try mesh[index].scalar("SELECT string_agg(id || ':' || balance, ',' ORDER BY id) FROM public.accounts") ?? "" }
        #expect(waitUntil(timeout: 30) { try (1...3).allSatisfy { try balances($0) == "1:11,2:20" } })

        // int -> bigint: apply reinstalls the functions but cannot retype the change table's column.
        for index in 1...3 { try mesh[index].execute("ALTER TABLE public.accounts ALTER COLUMN balance TYPE bigint") }
        #expect(mesh.mmlite(["apply"]).code == 0)
        let retyped = mesh.mmlite(["status", "--check"])
        #expect(retyped.code == 2, "\(retyped)")
        #expect(retyped.out.contains("public.accounts on n2: conflict handling was installed for other columns (balance is bigint, was integer) (critical); fix: mmlite apply does not change column types of the conflict tables: on every node ALTER TABLE mmlite.\"public.accounts$changes\" ALTER COLUMN balance TYPE bigint; then mmlite apply"), "\(retyped)")
        for index in 1...3 { try mesh[index].execute("ALTER TABLE mmlite.\"public.accounts$changes\" ALTER COLUMN balance TYPE bigint") }
        #expect(mesh.mmlite(["apply"]).code == 0)
        #expect(mesh.mmlite(["status", "--check"]).code == 0)
        try mesh[3].execute("UPDATE public.accounts SET balance = 5000000000 WHERE id = 2")
        #expect(waitUntil(timeout: 30) { try (1...3).allSatisfy { try balances($0) == "1:11,2:5000000000" } })
        let errors = mesh.logErrors().filter { !$0.contains("column n.owner does not exist") && !$0.contains("\"owner\" does not exist") }
        #expect(errors.isEmpty, "no error but the refused insert: \(errors)")
    }
}
