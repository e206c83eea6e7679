import ClusterHarness
import Foundation
import MMLiteCore
import PostgresClient
import Testing

@Suite("a role without superuser reads a mesh's state, on every major", .serialized)
struct UnprivilegedReadTests {
    /// A superuser builds the mesh; `watcher` (LOGIN and pg_monitor, as a
    /// monitoring role has) runs status and doctor: first without rights on
    /// mmlite's schema (said as such, not as "cannot connect"), then without
    /// the one on mmlite.conflict_tables (drift unknown, said so), then with
    /// the grants docs/security.md lists. PostgreSQL 13 lets only superusers read
    /// pg_subscription.oid: a query naming it failed the whole read there.
    @Test("status and doctor as a monitoring role: a missing grant is named as one; with the documented grants every node and link is read", arguments: everyInstallation)
    func statusAndDoctor(_ pg: PGInstallation) throws {
        let mesh = try TestMesh(2, installation: pg)
        let optIn = "\n[tables.\"public.users\"]\nconflicts = \"last-update-wins\"\n"
        try mesh.writeConfig(extraNodes: optIn)
        let applied = mesh.mmlite(["apply"])
        try #require(applied.code == 0, "\(applied)")
        try mesh.expectReplicates(base: 100)
        for index in 1...2 { try mesh[index].execute("CREATE ROLE watcher LOGIN; GRANT pg_monitor TO watcher") }
        try mesh.writeConfig(dsn: [1: mesh[1].conninfo.replacingOccurrences(of: "user=postgres", with: "user=watcher"),
                                   2: mesh[2].conninfo.replacingOccurrences(of: "user=postgres", with: "user=watcher")],
                             extraNodes: optIn)

        let denied = mesh.mmlite(["status"])
        #expect(denied.out.contains("n1: connected, but cannot read its state: permission denied") && denied.out.contains("UNREADABLE"), "\(denied)")
        #expect(mesh.mmlite(["status", "--check"]).code == 2)
        #expect(mesh.mmlite(["metrics"]).out.contains("mmlite_node_up{mesh=\"shop\",node=\"n1\"} 0"))
        let deniedJSON = (try? JSONSerialization.jsonObject(with: Data(mesh.mmlite(["status", "--format", "json"]).out.utf8))) as? [String: Any]
        #expect((deniedJSON?["nodes"] as? [[String: Any]] ?? []).map { [$0["reachable"] as? Bool, $0["connected"] as? Bool] } == [[false, true], [false, true]])
        let doctorDenied = mesh.mmlite(["doctor"])
        #expect(doctorDenied.out.contains("connected as watcher, but reading the node's state failed: permission denied"), "\(doctorDenied)")
        #expect(!doctorDenied.out.contains("cannot connect"), "\(doctorDenied)")

        // Every grant but mmlite.conflict_tables': drift cannot be judged there, and status says so
        // (it said "not installed" for every opted-in table before).
        for index in 1...2 { try mesh[index].execute("GRANT USAGE ON SCHEMA mmlite TO watcher; GRANT SELECT ON mmlite.sequence_offsets TO watcher") }
        let partial = mesh.mmlite(["status", "--format", "json"])
        let partialDrift = ((try? JSONSerialization.jsonObject(with: Data(partial.out.utf8))) as? [String: Any])?["drift"] as? [[String: Any]] ?? []
        #expect(partialDrift.count == 4 && partialDrift.allSatisfy { $0["kind"] as? String == "unread" && $0["state"] as? String == "unknown" },
                "\(partial)")
        #expect(!partial.out.contains("not installed"), "\(partial)")

        for index in 1...2 { try mesh[index].execute(ReadOnlyRole.grants(role: "watcher")) }
        let status = mesh.mmlite(["status", "--format", "json"])
        #expect(status.code == 0, "\(status)")
        let json = (try? JSONSerialization.jsonObject(with: Data(status.out.utf8))) as? [String: Any]
        let summary = json?["summary"] as? [String: Any]
        #expect(summary?["nodes_reachable"] as? Int == 2 && summary?["links_ok"] as? Int == 2 && summary?["drift"] as? Int == 0, "\(status)")
        // The conflict log's size, not its rows (it holds user rows): counted only with SELECT on it.
        let nodes = json?["nodes"] as? [[String: Any]] ?? []
        #expect(nodes.allSatisfy { $0["conflict_log_bytes"] is Int && $0["conflict_log_rows"] is NSNull && $0["version_tables"] as? Int == 1 }, "\(status)")
        // The exporter's observation is status's: every node up, every link's series.
        let metrics = mesh.mmlite(["metrics"])
        #expect(metrics.code == 0 && metrics.out.contains("mmlite_node_up{mesh=\"shop\",node=\"n1\"} 1")
                && metrics.out.contains("mmlite_node_up{mesh=\"shop\",node=\"n2\"} 1"), "\(metrics)")
        let doctor = mesh.mmlite(["doctor"])
        #expect(doctor.out.contains("connected to postgres as watcher"), "\(doctor)")
        // A role that may not create objects gets doctor's privilege findings; nothing it may read is misread.
        #expect(!doctor.out.contains("reading the node's state failed") && !doctor.out.contains("is not installed here"), "\(doctor)")

        // A subscription of the same name in another database of n2's cluster (13 shows this role
        // subscription oids only by name, across databases): the mesh's link is still found running.
        try mesh[2].execute("CREATE DATABASE other")
        try mesh[2].execute("CREATE SUBSCRIPTION mmlite_shop_from_n1 CONNECTION 'dbname=none' PUBLICATION p WITH (connect = false)", database: "other")
        #expect(try mesh[2].scalar("SELECT count(*) FROM pg_stat_subscription WHERE subname = 'mmlite_shop_from_n1'") == "2")
        let twice = mesh.mmlite(["status", "--format", "json"])
        let twiceSummary = ((try? JSONSerialization.jsonObject(with: Data(twice.out.utf8))) as? [String: Any])?["summary"] as? [String: Any]
        #expect(twice.code == 0 && twiceSummary?["links_ok"] as? Int == 2, "\(twice)")
    }

    @Test("docs/security.md quotes the monitoring role's grants exactly as this suite runs them")
    func docsQuoteTheGrants() throws {
        let text = try String(contentsOf: repositoryFile("docs/security.md"), encoding: .utf8)
        #expect(text.contains(ReadOnlyRole.grants(role: "monitor")), "docs/security.md lacks, verbatim:\n\(ReadOnlyRole.grants(role: "monitor"))")
    }
}

/// docs/security.md, "A role for status and monitoring", as the tests run it.
enum ReadOnlyRole {
    static func grants(role: String) -> String {
        "GRANT USAGE ON SCHEMA mmlite TO \(role); GRANT SELECT ON mmlite.sequence_offsets, mmlite.conflict_tables TO \(role)"
    }
}
