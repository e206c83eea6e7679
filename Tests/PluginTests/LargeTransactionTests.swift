import ClusterHarness
import Foundation
import PostgresClient
import Testing

@Suite("Large transactions")
struct LargeTransactionTests {
    static let rows = 200_000

    /// 200k rows in one transaction with logical_decoding_work_mem at its
    /// minimum: the reorder buffer spills it to disk. It must arrive whole, and
    /// the copy the subscriber applied (carrying an origin) must not come back.
    @Test("a 200k-row transaction spilled to disk replicates once", arguments: installations)
    func spilledTransaction(_ installation: PGInstallation) throws {
        try withClusters(2, installation, settings: ["logical_decoding_work_mem": "'64kB'"]) { nodes in
            // PostgreSQL 18 streams large transactions by default (streaming = parallel).
            try originalProcedure(node1: nodes[0], node2: nodes[1],
                                  subscriptionOptions: installation.major >= 14 ? ", streaming = off" : "")
            try run(nodes, streamed: false, installation)
        }
        print(label(installation, "200k-row spilled transaction: replicated once"))
    }

    /// The same transaction streamed while still in progress (`streaming = on`,
    /// PostgreSQL 14+), in both directions.
    @Test("a 200k-row transaction streamed in progress replicates once", arguments: installations.filter { $0.major >= 14 })
    func streamedTransaction(_ installation: PGInstallation) throws {
        try withClusters(2, installation, settings: ["logical_decoding_work_mem": "'64kB'"]) { nodes in
            try originalProcedure(node1: nodes[0], node2: nodes[1], subscriptionOptions: ", streaming = on")
            try run(nodes, streamed: true, installation)
        }
        print(label(installation, "200k-row streamed transaction: replicated once"))
    }

    func run(_ nodes: [Cluster], streamed: Bool, _ installation: PGInstallation) throws {
        let (node1, node2) = (nodes[0], nodes[1])
        try node1.execute("INSERT INTO users SELECT g, 'bulk-' || g, NULL FROM generate_series(1, \(Self.rows)) g")
        try node2.execute("INSERT INTO users SELECT g, 'other', NULL FROM generate_series(\(Self.rows + 1), \(Self.rows + 10)) g")
        try barrier(nodes, timeout: 300)
        try expectIdentical(nodes, tables: ["public.users"])
        #expect(try node2.scalar("SELECT count(*) FROM users") == "\(Self.rows + 10)")
        // Exactly once and no echo: node1 applied only node2's 10 rows.
        #expect(try node1.scalar("SELECT count(*) FROM applied_log") == "10")
        #expect(try node2.scalar("SELECT count(*) FROM applied_log") == "\(Self.rows)")
        if installation.major >= 14 {
            // Slot statistics reach pg_stat_replication_slots with a delay.
            let column = streamed ? "stream_txns" : "spill_txns"
            var seen = "0"
            let counted = waitUntil(timeout: 30) {
                seen = try node1.scalar("SELECT \(column) FROM pg_stat_replication_slots WHERE slot_name = 'node2'") ?? "0"
                return (Int(seen) ?? 0) > 0
            }
            #expect(counted, "the transaction was \(streamed ? "streamed" : "spilled to disk") (\(column) = \(seen))")
        }
        expectCleanLogs(nodes)
    }
}
