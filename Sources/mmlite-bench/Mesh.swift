import ClusterHarness
import Foundation
import PostgresClient

/// Scenario 2: pgbench on every writing node at once; TPS per node, lag during
/// the run, catch-up time after it, content equality at the end.
enum Topology: String, Codable, CaseIterable {
    case native = "native 1→1"
    /// The ceiling for a 3-node mesh: the same per-node load and the same
    /// links (every node sends its own writes to the two others: 6 walsenders,
    /// 6 apply workers) with plain pgoutput. Loop-free without any filter
    /// because each node writes and publishes only its own schema (w1, w2, w3).
    case native3 = "native one-way fan-out, 3 nodes"
    case mmlite2 = "mmlite 2-node mesh"
    case mmlite3 = "mmlite 3-node mesh"
    case pglogical2 = "pglogical 2-node bidirectional"

    var key: String {
        switch self {
        case .native: return "native"
        case .native3: return "native3"
        case .mmlite2: return "mmlite2"
        case .mmlite3: return "mmlite3"
        case .pglogical2: return "pglogical2"
        }
    }
    var nodes: Int { self == .mmlite3 || self == .native3 ? 3 : 2 }
    /// Nodes pgbench writes to (one-way native: the publisher only).
    var writers: Int { self == .native ? 1 : nodes }
}

enum Phase: String, Codable, CodingKeyRepresentable {
    /// Unthrottled: as fast as the clients go (throughput).
    case max
    /// Every writer at the same fixed rate (lag and catch-up under equal load).
    case rate
    /// The same fixed rate with every subscription disabled; catch-up is the
    /// time to apply that backlog once they are enabled again.
    case backlog
}

struct PhaseResult: Codable {
    var tpsPerNode: [Double] = []
    var transactions: Int = 0
    /// Largest slot lag (bytes, pg_current_wal_lsn - confirmed_flush_lsn) seen during the run.
    var lagBytesMax: Double = 0
    /// Median over the samples of the largest slot lag at that moment.
    var lagBytesMedian: Double = 0
    /// Largest pg_stat_replication.replay_lag seen (seconds).
    var replayLagMax: Double = 0
    /// From the end of pgbench (backlog: from enabling the subscriptions)
    /// until every node has every writer's last change.
    var catchupSeconds: Double = .nan
    /// Largest number of transactions one node had to apply from its peers.
    var transactionsToApply: Int = 0
    var contentEqual = false
    var rows = 0
    var totalTPS: Double { tpsPerNode.reduce(0, +) }
    var meanTPSPerNode: Double { tpsPerNode.isEmpty ? .nan : totalTPS / Double(tpsPerNode.count) }
}

struct MeshRun: Codable {
    let topology: Topology
    let run: Int
    var phases: [Phase: PhaseResult] = [:]
    var errors: [String] = []
}

struct MeshScenario {
    let installation: PGInstallation
    let workDirectory: String
    let duration: Int
    let clients: Int
    let preloadRows: Int
    let pgbench: String

    static let pglogicalSettings = [
        "shared_preload_libraries": "'pglogical'",
        "output_plugin_libraries": "'pgoutput, test_decoding, mmlite, pglogical_output'",
    ]

    /// pgbench's script: per transaction one UPDATE of a preloaded row and one
    /// upsert of a random new key, both in this node's own key range.
    static let script = """
        \\set a :base + random(1, :nrows)
        \\set b :base + :nrows + random(1, 500000000)
        BEGIN;
        UPDATE bench_t SET v = v + 1, at = now() WHERE id = :a;
        INSERT INTO bench_t (id, node, v, pad) VALUES (:b, :node, 0, md5(:b::text)) ON CONFLICT (id) DO UPDATE SET v = bench_t.v + 1, at = now();
        END;

        """

    func scriptPath() throws -> String {
        let path = workDirectory + "/mesh.pgbench"
        try Self.script.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The clusters of one topology, kept for all its runs (runs of the
    /// different topologies interleave; idle clusters cost next to nothing).
    final class Setup {
        let topology: Topology
        let harness: ClusterHarness
        let nodes: [Cluster]
        var markerRound = 1
        var logErrorsSeen = 0
        init(topology: Topology, harness: ClusterHarness, nodes: [Cluster]) {
            self.topology = topology
            self.harness = harness
            self.nodes = nodes
        }
    }

    /// Fresh clusters for `topology`, schema, preloaded rows, replication
    /// running end to end.
    func setUp(_ topology: Topology) throws -> Setup {
        let harness = try ClusterHarness()
        var settings = Bench.clusterSettings
        if topology == .pglogical2 { settings.merge(Self.pglogicalSettings) { $1 } }
        do {
            let nodes = try (1...topology.nodes).map { try harness.startCluster(name: "n\($0)", installation: installation, settings: settings) }
            try createSchema(nodes, topology: topology)
            try connect(nodes, topology: topology)
            let setup = Setup(topology: topology, harness: harness, nodes: nodes)
            // Replication works end to end: a first marker from every writer everywhere.
            _ = try catchUp(nodes, writers: Array(nodes.prefix(topology.writers)), round: setup.markerRound, timeout: 120, topology: topology)
            setup.markerRound += 1
            return setup
        } catch {
            harness.destroyAll()
            throw error
        }
    }

    /// One run of one topology: the unthrottled phase, then the fixed-rate
    /// and backlog phases at the rate `rateAfter` returns for the unthrottled
    /// result (nil: no fixed-rate phases).
    func run(_ setup: Setup, run number: Int, rateAfter: (PhaseResult) -> Int?) throws -> MeshRun {
        let topology = setup.topology
        let nodes = setup.nodes
        var result = MeshRun(topology: topology, run: number)
        var phases: [(Phase, Int?)] = [(.max, nil)]
        var index = 0
        while index < phases.count {
            let (phase, phaseRate) = phases[index]
            index += 1
            if phase == .backlog {
                settleSlots(nodes)
                try setSubscriptions(nodes, topology: topology, enabled: false)
            }
            var phaseResult = try load(nodes, topology: topology, rate: phaseRate)
            phaseResult.transactionsToApply = topology == .native
                ? phaseResult.transactions
                : (phaseResult.transactions - Int(Double(phaseResult.transactions) / Double(topology.writers)))
            do {
                phaseResult.catchupSeconds = try catchUp(nodes, writers: Array(nodes.prefix(topology.writers)), round: setup.markerRound, timeout: 900, topology: topology,
                                                         release: phase == .backlog ? { try setSubscriptions(nodes, topology: topology, enabled: true) } : nil)
            } catch {
                result.errors.append("\(phase.rawValue): \(error)")
            }
            setup.markerRound += 1
            let fingerprints = try nodes.map { try $0.fingerprint(of: "bench_t") }
            phaseResult.contentEqual = Set(fingerprints).count == 1
            phaseResult.rows = Int(fingerprints.first?.split(separator: ":").first ?? "") ?? 0
            if !phaseResult.contentEqual {
                result.errors.append("\(phase.rawValue): content differs: \(fingerprints.joined(separator: " / "))")
            }
            say("mesh: \(topology.rawValue) run \(number) \(phase.rawValue)\(phaseRate.map { " (\($0) tps/node)" } ?? ""): tps/node \(phaseResult.tpsPerNode.map { fmt($0, 0) }.joined(separator: ", ")); lag max \(bytesHuman(phaseResult.lagBytesMax)); catch-up \(fmt(phaseResult.catchupSeconds, 3)) s; rows \(phaseResult.rows); equal \(phaseResult.contentEqual)")
            result.phases[phase] = phaseResult
            if phase == .max, let rate = rateAfter(phaseResult) { phases += [(.rate, rate), (.backlog, rate)] }
        }
        let logErrors = nodes.flatMap { node in node.logErrors().map { "\(node.name): \($0)" } }
        result.errors += logErrors.dropFirst(setup.logErrorsSeen)
        setup.logErrorsSeen = logErrors.count
        if !result.errors.isEmpty { say("mesh: \(topology.rawValue) run \(number): \(result.errors.count) problem(s):\n  " + result.errors.prefix(10).joined(separator: "\n  ")) }
        return result
    }

    /// native3: writer i's tables live in schema wi; `public.bench_t` and
    /// `public.bench_marker` are views over all of them, so catch-up and
    /// fingerprints read the same relation names as in the other topologies.
    static func writerSchema(_ writer: Int) -> String { "w\(writer)" }

    func createSchema(_ nodes: [Cluster], topology: Topology) throws {
        if topology == .native3 {
            for node in nodes {
                for writer in 1...topology.writers {
                    let schema = Self.writerSchema(writer)
                    try node.execute("""
                        CREATE SCHEMA \(schema);
                        CREATE TABLE \(schema).bench_t (id bigint PRIMARY KEY, node int NOT NULL, v bigint NOT NULL,
                                                        at timestamptz NOT NULL DEFAULT now(), pad text);
                        CREATE TABLE \(schema).bench_marker (node int NOT NULL, round int NOT NULL, PRIMARY KEY (node, round));
                        INSERT INTO \(schema).bench_t (id, node, v, at, pad) SELECT \(Self.base(writer)) + g, \(writer), 0, '2026-01-01', md5(g::text) FROM generate_series(1, \(preloadRows)) g;
                        """)
                    try node.execute("VACUUM ANALYZE \(schema).bench_t")
                }
                let all = (1...topology.writers).map(Self.writerSchema)
                try node.execute("""
                    CREATE VIEW public.bench_t AS \(all.map { "SELECT * FROM \($0).bench_t" }.joined(separator: " UNION ALL "));
                    CREATE VIEW public.bench_marker AS \(all.map { "SELECT * FROM \($0).bench_marker" }.joined(separator: " UNION ALL "));
                    """)
            }
            return
        }
        for node in nodes {
            try node.execute("""
                CREATE TABLE bench_t (id bigint PRIMARY KEY, node int NOT NULL, v bigint NOT NULL,
                                      at timestamptz NOT NULL DEFAULT now(), pad text);
                CREATE TABLE bench_marker (node int NOT NULL, round int NOT NULL, PRIMARY KEY (node, round));
                """)
            // The same preloaded rows on every node (the UPDATE targets), before replication starts.
            for writer in 1...topology.writers {
                try node.execute("INSERT INTO bench_t (id, node, v, at, pad) SELECT \(Self.base(writer)) + g, \(writer), 0, '2026-01-01', md5(g::text) FROM generate_series(1, \(preloadRows)) g")
            }
            try node.execute("VACUUM ANALYZE bench_t")
        }
    }

    static func base(_ node: Int) -> Int { node * 1_000_000_000 }

    func connect(_ nodes: [Cluster], topology: Topology) throws {
        let tables = "public.bench_t, public.bench_marker"
        switch topology {
        case .native:
            try nodes[0].execute("CREATE PUBLICATION bench_pub FOR TABLE \(tables)")
            try nodes[1].execute("CREATE SUBSCRIPTION bench_from_n1 CONNECTION \(sqlLiteral(nodes[0].conninfo)) PUBLICATION bench_pub WITH (copy_data = false)")
        case .native3:
            for (index, node) in nodes.enumerated() {
                let schema = Self.writerSchema(index + 1)
                try node.execute("CREATE PUBLICATION bench_pub FOR TABLE \(schema).bench_t, \(schema).bench_marker")
            }
            for publisher in nodes {
                for subscriber in nodes where subscriber !== publisher {
                    try subscriber.execute("""
                        CREATE SUBSCRIPTION bench_\(publisher.name)_to_\(subscriber.name) CONNECTION \(sqlLiteral(publisher.conninfo))
                        PUBLICATION bench_pub WITH (copy_data = false)
                        """)
                }
            }
        case .mmlite2, .mmlite3:
            // Exactly what `mmlite apply` creates (docs/objects.md): publications,
            // then one mmlite slot per peer, then subscriptions on those slots.
            for node in nodes { try node.execute("CREATE PUBLICATION mmlite_bench FOR TABLE \(tables)") }
            for publisher in nodes {
                for subscriber in nodes where subscriber !== publisher {
                    try publisher.execute("SELECT pg_create_logical_replication_slot('mmlite_bench_\(subscriber.name)', 'mmlite')")
                }
            }
            for publisher in nodes {
                for subscriber in nodes where subscriber !== publisher {
                    try subscriber.execute("""
                        CREATE SUBSCRIPTION mmlite_bench_from_\(publisher.name) CONNECTION \(sqlLiteral(publisher.conninfo))
                        PUBLICATION mmlite_bench WITH (create_slot = false, slot_name = 'mmlite_bench_\(subscriber.name)', copy_data = false)
                        """)
                }
            }
        case .pglogical2:
            for node in nodes {
                try node.execute("CREATE EXTENSION pglogical")
                try node.execute("SELECT pglogical.create_node(node_name := '\(node.name)', dsn := \(sqlLiteral(node.conninfo)))")
                try node.execute("SELECT pglogical.replication_set_add_table('default', 'public.bench_t'), pglogical.replication_set_add_table('default', 'public.bench_marker')")
            }
            for subscriber in nodes {
                for publisher in nodes where publisher !== subscriber {
                    try subscriber.execute("""
                        SELECT pglogical.create_subscription(subscription_name := 'from_\(publisher.name)',
                            provider_dsn := \(sqlLiteral(publisher.conninfo)), replication_sets := ARRAY['default'],
                            synchronize_structure := false, synchronize_data := false, forward_origins := '{}')
                        """)
                }
            }
            for subscriber in nodes {
                let ready = waitUntil(timeout: 60, interval: 0.2) {
                    try subscriber.scalar("SELECT count(*) FROM pglogical.show_subscription_status() WHERE status <> 'replicating'") == "0"
                }
                if !ready { throw BenchError("pglogical subscriptions on \(subscriber.name) did not start replicating:\n\(subscriber.serverLog().suffix(2000))") }
            }
        }
    }

    /// Brings every logical slot's `restart_lsn` up to the present (a
    /// CHECKPOINT logs the running transactions, the subscriber confirms past
    /// them). A walsender decodes from `restart_lsn`, which otherwise trails by
    /// whatever WAL was written since PostgreSQL last logged running
    /// transactions (every 15 s): a backlog's catch-up would include decoding
    /// a random share of the earlier phase again, which is not applying the
    /// backlog. Waits up to 30 s; a slot that does not settle is only noted.
    func settleSlots(_ nodes: [Cluster]) {
        for node in nodes {
            do {
                guard try node.scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_type = 'logical'") != "0",
                      let now = try node.scalar("SELECT pg_current_wal_lsn()") else { continue }
                try node.execute("CHECKPOINT")
                let settled = waitUntil(timeout: 30, interval: 0.05) {
                    try node.scalar("SELECT bool_and(restart_lsn >= '\(now)' AND confirmed_flush_lsn >= '\(now)') FROM pg_replication_slots WHERE slot_type = 'logical'") == "t"
                }
                if !settled { say("note: logical slots on \(node.name) did not reach \(now) within 30 s; the next backlog includes decoding older WAL again") }
            } catch {
                say("note: could not settle the slots on \(node.name): \(error)")
            }
        }
    }

    /// Disables or enables every subscription of the mesh; when disabling,
    /// waits until no walsender runs any more.
    func setSubscriptions(_ nodes: [Cluster], topology: Topology, enabled: Bool) throws {
        for subscriber in nodes {
            let connection = try subscriber.connect()
            if topology == .pglogical2 {
                let names = try connection.execute("SELECT sub_name FROM pglogical.subscription").rows.compactMap { $0[0] }
                for name in names {
                    _ = try connection.execute("SELECT pglogical.alter_subscription_\(enabled ? "enable" : "disable")(\(sqlLiteral(name)), true)")
                }
            } else {
                let names = try connection.execute("SELECT subname FROM pg_subscription").rows.compactMap { $0[0] }
                for name in names {
                    _ = try connection.execute("ALTER SUBSCRIPTION \(name) \(enabled ? "ENABLE" : "DISABLE")")
                }
            }
        }
        if !enabled {
            for node in nodes {
                let stopped = waitUntil(timeout: 60, interval: 0.05) {
                    try node.scalar("SELECT count(*) FROM pg_stat_replication") == "0"
                }
                if !stopped { throw BenchError("walsenders on \(node.name) did not stop after disabling the subscriptions") }
            }
        }
    }

    /// Inserts marker `round` on every writer, runs `release` (if any: the
    /// clock starts then), then waits until every node has all markers.
    /// Changes apply in commit order, so a node holding a writer's marker holds
    /// everything that writer committed before it.
    func catchUp(_ nodes: [Cluster], writers: [Cluster], round: Int, timeout: Double, topology: Topology = .native,
                 release: (() throws -> Void)? = nil) throws -> Double {
        let connections = try nodes.map { try $0.connect() }
        let writerConnections = try writers.enumerated().map { index, writer in
            try writer.connect(overrides: topology == .native3 ? ["options": "-c search_path=\(Self.writerSchema(index + 1)),public"] : [:])
        }
        var start = monotonicSeconds()
        for (index, writer) in writerConnections.enumerated() {
            _ = try writer.execute("INSERT INTO bench_marker VALUES (\(index + 1), \(round))")
        }
        if let release {
            start = monotonicSeconds()
            try release()
        }
        var pending = Set(connections.indices)
        let deadline = start + timeout
        while !pending.isEmpty {
            for index in pending.sorted() {
                let count = try connections[index].execute("SELECT count(*) FROM bench_marker WHERE round = \(round)").scalar
                if count == String(writers.count) { pending.remove(index) }
            }
            if pending.isEmpty { break }
            if monotonicSeconds() > deadline {
                throw BenchError("catch-up: \(pending.map { nodes[$0].name }) still missing markers of round \(round) after \(Int(timeout)) s")
            }
            usleep(2_000)
        }
        return monotonicSeconds() - start
    }

    /// pgbench on every writer at once; samples lag every second while it runs.
    func load(_ nodes: [Cluster], topology: Topology, rate: Int?) throws -> PhaseResult {
        let script = try scriptPath()
        var children: [Child] = []
        for (index, node) in nodes.prefix(topology.writers).enumerated() {
            var arguments = [pgbench, "-n", "-f", script, "-c", String(clients), "-j", String(clients),
                             "-T", String(duration), "-h", "127.0.0.1", "-p", String(node.port), "-U", "postgres",
                             "-D", "base=\(Self.base(index + 1))", "-D", "node=\(index + 1)", "-D", "nrows=\(preloadRows)"]
            if let rate { arguments += ["-R", String(rate)] }
            arguments.append("postgres")
            let stem = workDirectory + "/pgbench-\(topology.key)-\(node.name)-\(rate == nil ? "max" : "rate")"
            let environment = topology == .native3 ? ["PGOPTIONS": "-c search_path=\(Self.writerSchema(index + 1)),public"] : [:]
            children.append(try Child(arguments, outputPath: stem + ".out", errorPath: stem + ".err", environment: environment))
        }
        defer { for child in children where child.poll() == nil { kill(child.pid, SIGTERM); child.wait() } }
        let samplers = try nodes.map { try $0.connect() }
        var samples: [Double] = []
        var result = PhaseResult()
        let lagSQL = """
            SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)), 0)::float8,
                   coalesce(max(extract(epoch FROM r.replay_lag)), 0)::float8
            FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
            WHERE s.slot_type = 'logical'
            """
        var nextSample = monotonicSeconds() + 1
        while children.contains(where: { $0.poll() == nil }) {
            if monotonicSeconds() >= nextSample {
                nextSample += 1
                var worst = 0.0
                for sampler in samplers {
                    guard let row = try? sampler.execute(lagSQL).rows.first else { continue }
                    worst = max(worst, Double(row[0] ?? "") ?? 0)
                    result.replayLagMax = max(result.replayLagMax, Double(row[1] ?? "") ?? 0)
                }
                samples.append(worst)
            }
            usleep(50_000)
        }
        for (child, node) in zip(children, nodes) {
            guard child.poll() == 0 else {
                throw BenchError("pgbench on \(node.name) failed (exit \(child.poll() ?? -1)): \(child.errorOutput.suffix(2000))")
            }
            let output = child.output
            guard let tps = Self.parse(output, after: "tps = ") else { throw BenchError("no tps in pgbench output: \(output)") }
            result.tpsPerNode.append(tps)
            result.transactions += Int(Self.parse(output, after: "number of transactions actually processed: ") ?? 0)
        }
        result.lagBytesMax = samples.max() ?? 0
        result.lagBytesMedian = Stat(samples).isEmpty ? 0 : Stat(samples).median
        return result
    }

    static func parse(_ text: String, after marker: String) -> Double? {
        guard let range = text.range(of: marker) else { return nil }
        let number = text[range.upperBound...].prefix { $0.isNumber || $0 == "." }
        return Double(number)
    }
}
