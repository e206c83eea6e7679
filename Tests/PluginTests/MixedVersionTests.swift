import ClusterHarness
import Foundation
import PostgresClient
import Testing

/// Meshes whose nodes run different PostgreSQL majors, as during a rolling
/// upgrade. They need the builds of scripts/pg-builds (`scripts/test` passes
/// them all); with fewer majors available they do not run.
@Suite("Mixed majors")
struct MixedVersionTests {
    static func build(_ major: Int) -> PGInstallation? { installations.first { $0.major == major } }

    /// Three different majors: the oldest and newest we have and 15.
    static let threeMajors: [PGInstallation] = {
        let majors = Set(installations.map(\.major)).sorted()
        guard majors.count >= 3, let oldest = majors.first, let newest = majors.last else { return [] }
        let middle = majors.contains(15) && oldest != 15 && newest != 15 ? 15 : majors[majors.count / 2]
        return [oldest, middle, newest].compactMap { build($0) }
    }()

    @Test("3 nodes of 3 majors, all writing, end identical",
          .enabled(if: threeMajors.count == 3, "needs three majors: run scripts/test"))
    func threeMajorsConverge() throws {
        try withClusters(Self.threeMajors) { nodes in
            try fullMesh(nodes)  // mmlite on every link: works whatever the majors
            try writeConcurrentlyAndCompare(nodes, rowsPerNode: 1000)
        }
        print("[PostgreSQL \(Self.threeMajors.map(\.version).joined(separator: " + "))] mixed-major mesh: identical")
    }

    /// On links between two 16+ nodes, native `origin = none` with plain
    /// pgoutput slots does the filtering; links that touch a 15 node use mmlite
    /// slots (a 15 publisher ignores origin = none; a 15 subscriber cannot ask
    /// for it). The mixture must converge like a pure mmlite mesh.
    @Test("origin = none links between 16+ nodes mixed with mmlite links to 15",
          .enabled(if: MixedVersionTests.build(15) != nil && installations.filter { $0.major >= 16 }.count >= 2,
                   "needs 15 and two majors >= 16"))
    func originNoneMixedWithMMLite() throws {
        let newer = installations.filter { $0.major >= 16 }
        let builds = [Self.build(15), newer.first, newer.last].compactMap { $0 }
        try withClusters(builds) { nodes in
            var filters: Set<String> = []
            try fullMesh(nodes) { publisher, subscriber in
                let filter = LinkFilter.auto(publisher: publisher, subscriber: subscriber)
                filters.insert("\(publisher.name)->\(subscriber.name): \(filter)")
                return filter
            }
            #expect(filters.filter { $0.hasSuffix("originNone") }.count == 2, "\(filters)")
            try writeConcurrentlyAndCompare(nodes, rowsPerNode: 1000)
        }
        print("[PostgreSQL \(builds.map(\.version).joined(separator: " + "))] origin = none mixed with mmlite: identical")
    }

    /// Rolling upgrade: a 2-node mesh on 15; node2 leaves, a node of the newest
    /// major joins from node1 (copy_data = true) while node1 keeps writing, and
    /// catches up. Both end identical, and nothing came back to node1.
    @Test("rolling upgrade: a 15 node replaced by a newer major while the other writes",
          .enabled(if: MixedVersionTests.build(15) != nil && installations.contains { $0.major > 15 }, "needs 15 and a newer major"))
    func rollingUpgrade() throws {
        guard let old = Self.build(15), let new = installations.filter({ $0.major > 15 }).last else { return }
        let harness = try ClusterHarness()
        defer { harness.destroyAll() }
        let node1 = try harness.startCluster(name: "n1", installation: old)
        let node2 = try harness.startCluster(name: "n2", installation: old)
        for node in [node1, node2] { try node.execute(schemaSQL) }
        try originalProcedure(node1: node1, node2: node2)
        try node1.execute("INSERT INTO users SELECT g, 'n1', NULL FROM generate_series(1, 500) g")
        try node2.execute("INSERT INTO users SELECT g, 'n2', NULL FROM generate_series(1000001, 1000500) g")
        try barrier([node1, node2])

        // node2 leaves: its subscription first (drops its slot on node1), then node1's.
        try node2.execute("DROP SUBSCRIPTION from_node1")
        try node1.execute("DROP SUBSCRIPTION from_node2")
        try node2.stop()

        // node1 keeps writing while the new node joins.
        let writing = Atomic(true)
        var written = 0
        let upgraded = try harness.startCluster(name: "n3", installation: new)
        try upgraded.execute(schemaSQL)
        try concurrently(2) { worker in
            if worker == 0 {
                let connection = try node1.connect()
                var id = 2_000_000
                while writing.get() && id < 2_050_000 {
                    try connection.execute("INSERT INTO users VALUES (\(id), 'during join', NULL)")
                    id += 1
                }
                written = id - 2_000_000
                return
            }
            defer { writing.set(false) }
            try node1.execute("SELECT pg_create_logical_replication_slot('node3', 'mmlite')")
            try upgraded.execute("CREATE PUBLICATION node3 FOR TABLE users, departments, events, marks")
            try upgraded.execute("""
                CREATE SUBSCRIPTION from_node1 CONNECTION '\(node1.conninfo)' PUBLICATION node1
                WITH (copy_data = true, create_slot = false, slot_name = 'node3')
                """)
            try waitForTableSync(upgraded)
            // The new node's slot for node1 is created after its copy (safe on every
            // major), and uses mmlite: node1 (15) cannot ask for origin = none.
            try upgraded.execute("SELECT pg_create_logical_replication_slot('node1', 'mmlite')")
            try node1.execute("""
                CREATE SUBSCRIPTION from_node3 CONNECTION '\(upgraded.conninfo)' PUBLICATION node3
                WITH (copy_data = false, create_slot = false, slot_name = 'node1')
                """)
            usleep(500_000)
        }
        try upgraded.execute("INSERT INTO users SELECT g, 'n3', NULL FROM generate_series(3000001, 3000100) g")
        try barrier([node1, upgraded])
        try expectIdentical([node1, upgraded])
        #expect(written > 0, "node1 wrote during the join")
        #expect(try upgraded.scalar("SELECT count(*) FROM users") == "\(1000 + written + 100)")
        // node1 received exactly the new node's 100 rows: nothing of its own came back.
        let fromNew = try node1.scalar("SELECT count(*) FROM applied_log WHERE id > 3000000")
        let fromOld = try node1.scalar("SELECT count(*) FROM applied_log WHERE id >= 1000001 AND id <= 1000500")
        let total = try node1.scalar("SELECT count(*) FROM applied_log")
        #expect(fromNew == "100" && total == "\((Int(fromOld ?? "") ?? 0) + 100)", "applied on node1: \(total ?? "?")")
        // Dropping node2's subscription stops its worker with a FATAL line: expected.
        expectCleanLogs([node1, upgraded], ignoring: "terminating logical replication worker due to administrator command")
        print("[PostgreSQL \(old.version) -> \(new.version)] rolling upgrade: identical")
    }
}
