import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import PostgresClient
import Testing

/// PostgreSQL 15 and 18 from `MMLITE_PG_CONFIGS` (resolve --skip needs 15+).
let resolveInstallations: [PGInstallation] = {
    let all = (try? PGInstallation.fromEnvironment()) ?? []
    return all.filter { [15, 18].contains($0.major) }
}()

/// `people` has a secondary unique key: two nodes inserting different ids
/// with one email stop replication, whatever the conflict handling.
let resolveSchema = testSchema + """

CREATE TABLE public.people (id int PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE public.accounts (id int PRIMARY KEY, owner text, email text UNIQUE);
"""

extension TestMesh {
    /// A 2-node mesh built by `apply`; workers retry every second.
    static func resolveMesh(_ installation: PGInstallation, optIn: Bool = false) throws -> TestMesh {
        let fast = ["wal_retrieve_retry_interval": "1000"]
        let mesh = try TestMesh(2, settings: [1: fast, 2: fast], schema: [1: resolveSchema, 2: resolveSchema], installation: installation)
        try mesh.writeConfig(tables: ["public.users", "public.people", "public.accounts"], extraNodes: optIn ? """

            [tables."public.accounts"]
            conflicts = "last-update-wins"

            """ : "")
        let apply = mesh.mmlite(["apply"])
        guard apply.code == 0 else { throw HarnessError("apply failed: \(apply)") }
        return mesh
    }

    func applyErrors(_ index: Int, from publisher: Int) throws -> Int {
        Int(try self[index].scalar("""
            SELECT coalesce(st.apply_error_count, 0) FROM pg_subscription s
            LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid WHERE s.subname = 'mmlite_shop_from_n\(publisher)'
            """) ?? "0") ?? 0
    }

    /// Status as parsed JSON: the link publisher -> subscriber.
    func statusLink(_ publisher: Int, _ subscriber: Int) throws -> [String: Any]? {
        let run = mmlite(["status", "--format", "json"])
        let root = try JSONSerialization.jsonObject(with: Data(run.out.utf8)) as? [String: Any]
        let links = root?["links"] as? [[String: Any]] ?? []
        return links.first { $0["publisher"] as? String == "n\(publisher)" && $0["subscriber"] as? String == "n\(subscriber)" }
    }
}

@Suite("resolve --skip and the conflict log on real clusters", .serialized, .enabled(if: !resolveInstallations.isEmpty))
struct ResolveTests {
    @Test("a secondary unique key stops a link; status shows it stuck with the LSN; resolve --skip records and skips it; conflicts list merges nodes",
          arguments: resolveInstallations)
    func uniqueKey(_ installation: PGInstallation) throws {
        let mesh = try TestMesh.resolveMesh(installation)
        try mesh.expectReplicates(base: 1)

        try mesh.setLink(from: 1, to: 2, false); try mesh.setLink(from: 2, to: 1, false)
        try mesh[1].execute("INSERT INTO public.people VALUES (1, 'ann@example.org')")
        try mesh[2].execute("INSERT INTO public.people VALUES (2, 'ann@example.org')")
        try mesh.setLink(from: 1, to: 2, true)
        #expect(waitUntil(timeout: 30) { try mesh.applyErrors(2, from: 1) >= 2 }, "n2 keeps failing on the unique email")

        // status: stuck, with the failing transaction's LSN and what it holds.
        var link: [String: Any]?
        #expect(waitUntil(timeout: 20) {
            link = try mesh.statusLink(1, 2)
            return link?["stuck"] as? Bool == true && link?["failing_lsn"] is String
        }, "status shows n1 -> n2 stuck: \(String(describing: link))")
        let failingLSN = link?["failing_lsn"] as? String
        let problems = (link?["problems"] as? [String] ?? []).joined(separator: "\n")
        #expect(problems.contains("stuck") && problems.contains(failingLSN ?? "?") && problems.contains("public.people"), "\(problems)")
        #expect(problems.contains("mmlite resolve n2 --skip"), "\(problems)")
        let table = mesh.mmlite(["status"])
        #expect(table.out.contains("STUCK"), "\(table)")

        // --dry-run changes nothing.
        let dry = mesh.mmlite(["resolve", "n2", "--skip", "--dry-run", "--from", "n1"])
        #expect(dry.code == 0, "\(dry)")
        #expect(dry.out.contains("Would skip") && dry.out.contains("ann@example.org") && dry.out.contains(failingLSN ?? "?"), "\(dry)")
        #expect(try mesh[2].scalar("SELECT to_regclass('mmlite.conflicts') IS NULL") == "t", "dry run created nothing")
        #expect(try mesh[2].scalar("SELECT subenabled FROM pg_subscription WHERE subname = 'mmlite_shop_from_n1'") == "t")

        let resolved = mesh.mmlite(["resolve", "n2", "--skip"])
        #expect(resolved.code == 0, "\(resolved)")
        #expect(resolved.out.contains("Skipped") && resolved.out.contains("streaming again"), "\(resolved)")
        #expect(try mesh[2].scalar("""
            SELECT count(*) FROM mmlite.conflicts WHERE kind = 'apply_error_skipped' AND table_name = 'public.people'
              AND key = '{"id": 1}' AND remote_row ->> 'email' = 'ann@example.org' AND peer = 'n1' AND winner = 'local'
              AND remote_version ->> 'lsn' = '\(failingLSN ?? "?")'
            """) == "1")

        // The other direction fails the same way on n1; resolve without --from finds it.
        try mesh.setLink(from: 2, to: 1, true)
        #expect(waitUntil(timeout: 30) { try mesh.applyErrors(1, from: 2) >= 1 })
        let second = mesh.mmlite(["resolve", "n1", "--skip"])
        #expect(second.code == 0, "\(second)")
        #expect(try mesh.conflictCount(1, where: "kind = 'apply_error_skipped' AND key = '{\"id\": 2}' AND peer = 'n2'") == 1)

        // Both links flow again, and status is healthy.
        try mesh.expectReplicates(base: 100)
        #expect(waitUntil(timeout: 30) { mesh.mmlite(["status", "--check"]).code == 0 }, "\(mesh.mmlite(["status"]))")
        #expect(mesh.mmlite(["resolve", "n2", "--skip", "--from", "n1", "--timeout", "3"]).code == 2, "a healthy link is not skipped")

        // conflicts list: entries from both nodes, merged; json parses; --table filters.
        let list = mesh.mmlite(["conflicts", "list"])
        #expect(list.code == 0 && list.out.contains("n1") && list.out.contains("n2") && list.out.contains("apply_error_skipped"), "\(list)")
        let json = mesh.mmlite(["conflicts", "--format", "json", "--since", "1 hour"])
        let entries = try JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [[String: Any]] ?? []
        #expect(Set(entries.compactMap { $0["node"] as? String }) == ["n1", "n2"], "\(json)")
        #expect(entries.allSatisfy { ($0["remote_row"] as? [String: Any])?["email"] as? String == "ann@example.org" })
        let times = entries.compactMap { $0["logged_at"] as? String }
        #expect(times == times.sorted())
        let other = mesh.mmlite(["conflicts", "list", "--format", "json", "--table", "public.users"])
        #expect(other.code == 0 && other.out.trimmingCharacters(in: .whitespacesAndNewlines) == "[]", "\(other)")
        #expect(mesh.mmlite(["conflicts", "list", "--since", "2026-01-01 00:00:00+00", "--table", "public.people"]).out.contains("public.people"))
        #expect(mesh.mmlite(["conflicts", "list", "--since", "yesterday-ish"]).code == 64)

        // prune keeps recent entries; status shows the log's size.
        let prune = mesh.mmlite(["conflicts", "prune"])
        #expect(prune.code == 0, "\(prune)")
        #expect(try mesh.conflictCount(2) == 1)
        try mesh[2].execute("UPDATE mmlite.conflicts SET logged_at = now() - interval '40 days'")
        #expect(mesh.mmlite(["conflicts", "prune"]).code == 0)
        #expect(try mesh.conflictCount(2) == 0)
        let status = try JSONSerialization.jsonObject(with: Data(mesh.mmlite(["status", "--format", "json"]).out.utf8)) as? [String: Any]
        let nodes = status?["nodes"] as? [[String: Any]] ?? []
        #expect(nodes.first { $0["name"] as? String == "n1" }?["conflict_log_rows"] as? Int == 1, "\(nodes)")
        // Only the expected errors: the unique violation (PG18: "conflict detected") and the bad --since.
        #expect(mesh.logErrors().allSatisfy { $0.contains("people_email_key") || $0.contains("conflict=insert_exists") || $0.contains("yesterday-ish") }, "\(mesh.logErrors())")
    }

    @Test("a stuck link of an opted-in table (its change table is what is published) is skipped too", arguments: resolveInstallations.prefix(1))
    func optedIn(_ installation: PGInstallation) throws {
        let mesh = try TestMesh.resolveMesh(installation, optIn: true)
        let doctor = mesh.mmlite(["doctor"])
        #expect(doctor.out.contains("WARN  unique_key") && doctor.out.contains("accounts_email_key") && doctor.out.contains("mmlite resolve <node> --skip"), "\(doctor)")
        #expect(!doctor.out.contains("people_email_key"), "plain tables are not warned about")
        try mesh.setLink(from: 1, to: 2, false)
        try mesh[1].execute("INSERT INTO public.accounts VALUES (1, 'ann', 'dup@example.org')")
        try mesh[2].execute("INSERT INTO public.accounts VALUES (2, 'bob', 'dup@example.org')")
        // n1 applies n2's row first: n1's apply trigger hits the unique email.
        #expect(waitUntil(timeout: 30) { try mesh.applyErrors(1, from: 2) >= 1 })
        let resolved = mesh.mmlite(["resolve", "n1", "--skip"])
        #expect(resolved.code == 0, "\(resolved)")
        #expect(resolved.out.contains("mmlite.public.accounts$changes"), "\(resolved)")
        #expect(try mesh.conflictCount(1, where: "kind = 'apply_error_skipped' AND table_name = 'mmlite.public.accounts$changes' AND peer = 'n2'") == 1)
        // The other direction hits the same email on n2.
        try mesh.setLink(from: 1, to: 2, true)
        #expect(waitUntil(timeout: 30) { try mesh.applyErrors(2, from: 1) >= 1 })
        #expect(mesh.mmlite(["resolve", "n2", "--skip", "--from", "n1"]).code == 0)
        try mesh.expectReplicates(base: 200)
    }
}
