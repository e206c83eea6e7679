import ClusterHarness
import Foundation
import PostgresClient

/// The `mmlite` command-line tool, for the scenarios that need its commands
/// (`join`, conflict handling).
struct MMLiteTool {
    let path: String
    let workDirectory: String

    @discardableResult
    func call(_ arguments: [String]) throws -> String {
        let result = try runProgram([path] + arguments, workDirectory: workDirectory)
        guard result.code == 0 else {
            throw BenchError("mmlite \(arguments.joined(separator: " ")) failed (exit \(result.code)):\n\(result.err.suffix(3000))\(result.out.suffix(2000))")
        }
        return result.out
    }

    /// A mesh config for `nodes` replicating `tables`; `extra` is appended verbatim.
    /// `meshSettings`: more `[mesh]` lines; `extra`: TOML after the nodes.
    func writeConfig(name: String, tables: [String], nodes: [Cluster], meshSettings: String = "", extra: String = "") throws -> String {
        var text = "[mesh]\nname = \"bench\"\ntables = [\(tables.map { "\"\($0)\"" }.joined(separator: ", "))]\n" + meshSettings
        for node in nodes {
            text += "\n[[nodes]]\nname = \"\(node.name)\"\ndsn = \"\(node.conninfo)\"\n"
        }
        text += extra
        let path = workDirectory + "/\(name).toml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

// MARK: scenario 3: join copy

struct JoinRun: Codable {
    /// Wall time of the whole `mmlite join` command.
    var joinSeconds: Double
    /// Of which the copy phase ("[N] copy ... in that snapshot" ... "done in X s":
    /// connecting, the snapshot, every table's COPY, the commit).
    var copySeconds: Double?
    var dumpSeconds: Double
    var contentEqual: Bool
    /// Everything else: preflight, slots, pause, wiring, catch-up, start-up.
    var setupSeconds: Double? { copySeconds.map { joinSeconds - $0 } }

    /// The copy phase's time from `mmlite join`'s output.
    static func copyPhaseSeconds(_ output: String) -> Double? {
        var inCopy = false
        for line in output.split(separator: "\n") {
            if line.hasPrefix("["), line.contains("] copy ") { inCopy = true; continue }
            if inCopy, let range = line.range(of: "done in ") {
                return Double(line[range.upperBound...].prefix { $0.isNumber || $0 == "." })
            }
            if inCopy, line.hasPrefix("[") { return nil }
        }
        return nil
    }
}

struct JoinScenario {
    let installation: PGInstallation
    let tool: MMLiteTool
    let rows: Int
    let workDirectory: String

    static let table = "CREATE TABLE join_t (id bigint PRIMARY KEY, v bigint NOT NULL, at timestamptz NOT NULL, pad text NOT NULL)"

    /// Fresh clusters: a running 2-node mesh n1 + n2 (built by `mmlite apply`)
    /// holding the same `rows` rows; `mmlite join n3 --from n1` copies them into
    /// n3, `pg_dump | psql` into dump1 (order alternates between runs).
    func run(number: Int) throws -> JoinRun {
        let harness = try ClusterHarness()
        defer { harness.destroyAll() }
        let source = try harness.startCluster(name: "n1", installation: installation, settings: Bench.clusterSettings)
        let peer = try harness.startCluster(name: "n2", installation: installation, settings: Bench.clusterSettings)
        let joiner = try harness.startCluster(name: "n3", installation: installation, settings: Bench.clusterSettings)
        let dumpTarget = try harness.startCluster(name: "dump1", installation: installation, settings: Bench.clusterSettings)
        for node in [source, peer, joiner, dumpTarget] { try node.execute(Self.table) }
        for node in [source, peer] {
            try node.execute("INSERT INTO join_t SELECT g, g, '2026-01-01'::timestamptz + g * interval '1 second', md5(g::text) FROM generate_series(1, \(rows)) g")
            try node.execute("VACUUM ANALYZE join_t")
        }
        let expected = try source.fingerprint(of: "join_t")
        let mesh = try tool.writeConfig(name: "join-mesh", tables: ["public.join_t"], nodes: [source, peer])
        try tool.call(["apply", "-c", mesh])

        func dump() throws -> Double {
            let bin = installation.bindir
            let pipeline = "set -o pipefail; \(shellQuote(bin + "/pg_dump")) --data-only --table=public.join_t -d \(shellQuote(source.conninfo)) | \(shellQuote(bin + "/psql")) -X -q -v ON_ERROR_STOP=1 -d \(shellQuote(dumpTarget.conninfo)) >/dev/null"
            var outcome: (code: Int32, out: String, err: String) = (0, "", "")
            let seconds = try timed { outcome = try runProgram(["/bin/bash", "-c", pipeline], workDirectory: workDirectory) }
            guard outcome.code == 0 else { throw BenchError("pg_dump | psql failed: \(outcome.err)") }
            return seconds
        }
        var copySeconds: Double?
        func join() throws -> Double {
            let all = try tool.writeConfig(name: "join-all", tables: ["public.join_t"], nodes: [source, peer, joiner])
            var output = ""
            let seconds = try timed { output = try tool.call(["join", "n3", "--from", "n1", "-c", all]) }
            copySeconds = JoinRun.copyPhaseSeconds(output)
            // Its phase times, for reading where the rest went.
            try? output.write(toFile: workDirectory + "/join-run-\(number + 1).out", atomically: true, encoding: .utf8)
            if copySeconds == nil { say("join: no copy phase time in mmlite join's output:\n\(output.suffix(2000))") }
            return seconds
        }
        var dumpSeconds = 0.0, joinSeconds = 0.0
        if number % 2 == 0 {
            dumpSeconds = try dump(); joinSeconds = try join()
        } else {
            joinSeconds = try join(); dumpSeconds = try dump()
        }
        let equal = try joiner.fingerprint(of: "join_t") == expected && dumpTarget.fingerprint(of: "join_t") == expected
        say("join: run \(number + 1): mmlite join \(fmt(joinSeconds)) s (copy phase \(fmt(copySeconds ?? .nan)) s, the rest \(fmt(copySeconds.map { joinSeconds - $0 } ?? .nan)) s), pg_dump|psql \(fmt(dumpSeconds)) s, content equal \(equal)")
        return JoinRun(joinSeconds: joinSeconds, copySeconds: copySeconds, dumpSeconds: dumpSeconds, contentEqual: equal)
    }
}

// MARK: scenario 4: conflict handling overhead

/// The meshes each conflicts run builds: plain replication, and
/// `public.bench_t` opted in to last-update-wins applied by the native
/// trigger (`conflict_apply = "auto"`, the default) or by the SQL one; and,
/// for comparison, pglogical 2.4 bidirectional with
/// `pglogical.conflict_resolution = last_update_wins` (same data, same
/// backlog). (`CodingKeyRepresentable`: results.json keeps per-mode figures
/// as JSON objects keyed by the mode's name.)
enum ConflictMode: String, CaseIterable, Codable, CodingKeyRepresentable {
    case plain, native, sql
    case pglogicalLWW = "pglogical_lww"

    var description: String {
        switch self {
        case .plain: "without conflict handling"
        case .native: "with conflict handling, native apply"
        case .sql: "with conflict handling, SQL apply"
        case .pglogicalLWW: "pglogical, last_update_wins"
        }
    }

    /// pglogical's own settings for the comparison mode (its conflict
    /// resolution reads commit timestamps: `track_commit_timestamp = on`,
    /// which every harness cluster has; set again here so the mode never
    /// depends on that default).
    static let pglogicalSettings = MeshScenario.pglogicalSettings.merging([
        "pglogical.conflict_resolution": "'last_update_wins'",
        "track_commit_timestamp": "on",
    ]) { $1 }
}

struct ConflictRun: Codable {
    /// Seconds to apply a backlog of `transactions` on the subscriber, per mode.
    var applySeconds: [ConflictMode: Double]
    /// Local pgbench TPS on the publisher, per mode.
    var localTPS: [ConflictMode: Double]
    /// CPU seconds of n2's apply worker and of n1's walsender, both started
    /// for the backlog (the subscription was disabled), when it was applied.
    var applyCPUSeconds: [ConflictMode: Double]? = nil
    var senderCPUSeconds: [ConflictMode: Double]? = nil
    var contentEqual: Bool
}

/// The processes that apply and send a backlog, for their CPU time
/// (ConflictRun.applyCPUSeconds): n2's apply workers (PostgreSQL's or
/// pglogical's), n1's walsenders.
enum BacklogProcesses {
    static let applyWorkers = "SELECT pid FROM pg_catalog.pg_stat_activity WHERE backend_type IN ('logical replication worker', 'logical replication apply worker') OR backend_type LIKE 'pglogical apply%'"
    static let walsenders = "SELECT pid FROM pg_catalog.pg_stat_replication"

    /// (apply worker CPU s on n2, walsender CPU s on n1).
    static func cpuSeconds(_ nodes: [Cluster]) throws -> (apply: Double?, sender: Double?) {
        (try serverCPUSeconds(nodes[1], pids: applyWorkers), try serverCPUSeconds(nodes[0], pids: walsenders))
    }
}

struct ConflictScenario {
    let installation: PGInstallation
    let tool: MMLiteTool
    let mesh: MeshScenario
    let transactions: Int
    /// The modes to run (pglogical's only when it is installed).
    var modes: [ConflictMode] = [.plain, .native, .sql]
    /// Runs from this number on leave out the SQL apply trigger (--quick: only
    /// its first run has it; its backlog takes 4–8 times plain's).
    var sqlRuns = Int.max
    /// When set (--quick), each mode's mesh is built once and kept for every
    /// run (the tables grow by the same writes in every mode); otherwise every
    /// run builds fresh meshes.
    var kept: KeptMeshes?

    final class KeptMeshes {
        var meshes: [ConflictMode: (harness: ClusterHarness, nodes: [Cluster])] = [:]
        func destroyAll() {
            for mesh in meshes.values { mesh.harness.destroyAll() }
            meshes = [:]
        }
    }

    /// Two fresh nodes with `bench_t` and `bench_marker` preloaded alike,
    /// replicating both ways in `mode`; checks that the mode is what runs.
    func setUp(_ mode: ConflictMode, harness: ClusterHarness, extraTables: [String] = [], preload: ([Cluster]) throws -> Void = { _ in }) throws -> [Cluster] {
        var settings = Bench.clusterSettings
        if mode == .pglogicalLWW { settings.merge(ConflictMode.pglogicalSettings) { $1 } }
        let nodes = try (1...2).map { try harness.startCluster(name: "n\($0)", installation: installation, settings: settings) }
        try mesh.createSchema(nodes, topology: mode == .pglogicalLWW ? .pglogical2 : .mmlite2)
        try preload(nodes)
        if mode == .pglogicalLWW {
            try mesh.connect(nodes, topology: .pglogical2)
            for node in nodes {
                for table in extraTables {
                    try node.execute("SELECT pglogical.replication_set_add_table('default', \(sqlLiteral(table)))")
                }
            }
            let resolution = try nodes[1].scalar("SHOW pglogical.conflict_resolution") ?? ""
            guard resolution == "last_update_wins" else { throw BenchError("conflicts (pglogical): pglogical.conflict_resolution is \(resolution), expected last_update_wins") }
            return nodes
        }
        let tables = ["public.bench_t", "public.bench_marker"] + extraTables
        var extra = ""
        if mode != .plain {
            for table in ["public.bench_t"] + extraTables { extra += "\n[tables.\"\(table)\"]\nconflicts = \"last-update-wins\"\n" }
        }
        let config = try tool.writeConfig(name: "conflicts-\(mode.rawValue)", tables: tables, nodes: nodes,
                                          meshSettings: mode == .sql ? "conflict_apply = \"sql\"\n" : "", extra: extra)
        try tool.call(["apply", "-c", config])
        if mode != .plain {
            // Measure the implementation the mode names, or nothing.
            // (One apply trigger per opted-in table: bench_t's names its own function in SQL mode.)
            let functions = try nodes[1].scalar("SELECT string_agg(tgfoid::regproc::text, ' ' ORDER BY 1) FROM pg_trigger WHERE tgname = 'mmlite_apply'") ?? ""
            let expected = mode == .native ? "mmlite.apply_change" : "mmlite.\"public.bench_t$apply\""
            let function = functions.split(separator: " ").contains(Substring(expected)) ? expected : functions
            guard function == expected else { throw BenchError("conflicts (\(mode.rawValue)): n2's apply trigger runs \(function), expected \(expected) (is mmlite.so installed?)") }
        }
        return nodes
    }

    /// Stops or starts n2's subscription from n1 (pglogical: its worker too).
    func setSubscriptionFromN1(_ nodes: [Cluster], mode: ConflictMode, enabled: Bool) throws {
        if mode == .pglogicalLWW {
            try nodes[1].execute("SELECT pglogical.alter_subscription_\(enabled ? "enable" : "disable")('from_n1', true)")
        } else {
            try nodes[1].execute("ALTER SUBSCRIPTION mmlite_bench_from_n1 \(enabled ? "ENABLE" : "DISABLE")")
        }
        if !enabled {
            let stopped = waitUntil(timeout: 60, interval: 0.05) { try nodes[0].scalar("SELECT count(*) FROM pg_stat_replication") == "0" }
            if !stopped { throw BenchError("conflicts (\(mode.rawValue)): n1's walsender did not stop after disabling n2's subscription") }
        }
    }

    /// Fresh 2-node meshes, one per mode (the order rotates between runs).
    /// Local cost: unthrottled pgbench on n1. Apply throughput: n2's
    /// subscription from n1 disabled, `transactions` written on n1, enabled,
    /// timed until n1's marker arrives on n2.
    func run(number: Int) throws -> ConflictRun {
        var apply: [ConflictMode: Double] = [:], local: [ConflictMode: Double] = [:]
        var applyCPU: [ConflictMode: Double] = [:], senderCPU: [ConflictMode: Double] = [:]
        var equal = true
        let modes = number < sqlRuns ? self.modes : self.modes.filter { $0 != .sql }
        for offset in 0..<modes.count {
            let mode = modes[(offset + number) % modes.count]
            var fresh: ClusterHarness?
            defer { fresh?.destroyAll() }
            let nodes: [Cluster]
            if let known = kept?.meshes[mode] {
                nodes = known.nodes
            } else {
                let harness = try ClusterHarness()
                do { nodes = try setUp(mode, harness: harness) } catch { harness.destroyAll(); throw error }
                if let kept { kept.meshes[mode] = (harness, nodes) } else { fresh = harness }
            }
            // Marker rounds of this run (a kept mesh holds the earlier runs' markers).
            let round = number * 10
            _ = try mesh.catchUp(nodes, writers: [nodes[0]], round: round + 1, timeout: 120)
            // Local write cost.
            let localResult = try mesh.load(nodes, topology: .native, rate: nil)
            local[mode] = localResult.meanTPSPerNode
            _ = try mesh.catchUp(nodes, writers: [nodes[0]], round: round + 2, timeout: 900)
            // Apply throughput of a backlog (of it alone: see settleSlots).
            mesh.settleSlots([nodes[0]])
            try setSubscriptionFromN1(nodes, mode: mode, enabled: false)
            let script = try mesh.scriptPath()
            let perClient = max(1, transactions / mesh.clients)
            let bench = try runProgram([mesh.pgbench, "-n", "-f", script, "-c", String(mesh.clients), "-j", String(mesh.clients),
                                 "-t", String(perClient), "-h", "127.0.0.1", "-p", String(nodes[0].port), "-U", "postgres",
                                 "-D", "base=\(MeshScenario.base(1))", "-D", "node=1", "-D", "nrows=\(mesh.preloadRows)", "postgres"],
                                workDirectory: mesh.workDirectory)
            guard bench.code == 0 else { throw BenchError("pgbench failed: \(bench.err)") }
            try nodes[0].execute("INSERT INTO bench_marker VALUES (1, \(round + 3))")
            let start = monotonicSeconds()
            try setSubscriptionFromN1(nodes, mode: mode, enabled: true)
            let arrived = waitUntil(timeout: 900, interval: 0.02) {
                try nodes[1].scalar("SELECT count(*) FROM bench_marker WHERE round = \(round + 3)") == "1"
            }
            guard arrived else { throw BenchError("conflicts: backlog not applied on n2 within 900 s") }
            apply[mode] = monotonicSeconds() - start
            (applyCPU[mode], senderCPU[mode]) = try BacklogProcesses.cpuSeconds(nodes)
            let fingerprints = try nodes.map { try $0.fingerprint(of: "bench_t") }
            equal = equal && Set(fingerprints).count == 1
            say("conflicts: run \(number) \(mode.description): local \(fmt(local[mode] ?? .nan, 0)) tps, backlog of \(perClient * mesh.clients) txns applied in \(fmt(apply[mode] ?? .nan, 2)) s (\(fmt(Double(perClient * mesh.clients) / (apply[mode] ?? .nan), 0)) txn/s; CPU: apply worker \(fmt(applyCPU[mode] ?? .nan, 2)) s, walsender \(fmt(senderCPU[mode] ?? .nan, 2)) s), equal \(Set(fingerprints).count == 1)")
        }
        return ConflictRun(applySeconds: apply, localTPS: local, applyCPUSeconds: applyCPU, senderCPUSeconds: senderCPU, contentEqual: equal)
    }
}

// MARK: scenario 5: one bulk statement on an opted-in table

struct BulkRun: Codable {
    /// Seconds of `UPDATE bulk_t SET v = v + 1` (all rows, one statement) on n1, per mode.
    var localSeconds: [ConflictMode: Double]
    /// Seconds until n2 has applied it (its subscription enabled after the
    /// statement committed, slots settled before), per mode.
    var applySeconds: [ConflictMode: Double]
    /// As ConflictRun's: n2's apply worker and n1's walsender, CPU seconds.
    var applyCPUSeconds: [ConflictMode: Double]? = nil
    var senderCPUSeconds: [ConflictMode: Double]? = nil
    var contentEqual: Bool
}

/// One statement updating every row of a `rows`-row table on n1, on a plain
/// 2-node mesh and on one where the table is opted in to last-update-wins
/// (native apply trigger). Both meshes are built once and kept; the rounds
/// alternate the order, each after a VACUUM of both meshes.
struct BulkScenario {
    let conflicts: ConflictScenario
    let rows: Int
    var modes: [ConflictMode] = [.plain, .native]

    static let table = "public.bulk_t"

    func run(runs: Int) throws -> [BulkRun] {
        var meshes: [ConflictMode: (ClusterHarness, [Cluster])] = [:]
        defer { for (harness, _) in meshes.values { harness.destroyAll() } }
        for mode in modes {
            let harness = try ClusterHarness()
            meshes[mode] = (harness, [])
            let nodes = try conflicts.setUp(mode, harness: harness, extraTables: [Self.table]) { nodes in
                for node in nodes {
                    try node.execute("""
                        CREATE TABLE bulk_t (id bigint PRIMARY KEY, v bigint NOT NULL, at timestamptz NOT NULL DEFAULT now(), pad text);
                        INSERT INTO bulk_t (id, v, at, pad) SELECT g, 0, '2026-01-01', md5(g::text) FROM generate_series(1, \(rows)) g;
                        """)
                    try node.execute("VACUUM ANALYZE bulk_t")
                }
            }
            meshes[mode] = (harness, nodes)
            _ = try conflicts.mesh.catchUp(nodes, writers: [nodes[0]], round: 1, timeout: 120)
            say("bulk: \(mode.description): \(rows) rows on both nodes, replicating")
        }
        var results: [BulkRun] = []
        for run in 0..<runs {
            var local: [ConflictMode: Double] = [:], apply: [ConflictMode: Double] = [:]
            var applyCPU: [ConflictMode: Double] = [:], senderCPU: [ConflictMode: Double] = [:]
            var equal = true
            for (_, nodes) in meshes.values { for node in nodes { try node.execute("VACUUM bulk_t") } }
            for offset in 0..<modes.count {
                let mode = modes[(offset + run) % modes.count]
                guard let nodes = meshes[mode]?.1 else { continue }
                conflicts.mesh.settleSlots([nodes[0]])
                try conflicts.setSubscriptionFromN1(nodes, mode: mode, enabled: false)
                local[mode] = try timed { try nodes[0].execute("UPDATE bulk_t SET v = v + 1, at = now()") }
                let round = run + 10
                try nodes[0].execute("INSERT INTO bench_marker VALUES (1, \(round))")
                let start = monotonicSeconds()
                try conflicts.setSubscriptionFromN1(nodes, mode: mode, enabled: true)
                let arrived = waitUntil(timeout: 900, interval: 0.02) {
                    try nodes[1].scalar("SELECT count(*) FROM bench_marker WHERE round = \(round)") == "1"
                }
                guard arrived else { throw BenchError("bulk: the update was not applied on n2 within 900 s") }
                apply[mode] = monotonicSeconds() - start
                (applyCPU[mode], senderCPU[mode]) = try BacklogProcesses.cpuSeconds(nodes)
                let fingerprints = try nodes.map { try $0.fingerprint(of: "bulk_t") }
                equal = equal && Set(fingerprints).count == 1
                say("bulk: run \(run + 1) \(mode.description): UPDATE of \(rows) rows \(fmt(local[mode] ?? .nan, 2)) s on n1, applied on n2 in \(fmt(apply[mode] ?? .nan, 2)) s (CPU: apply worker \(fmt(applyCPU[mode] ?? .nan, 2)) s, walsender \(fmt(senderCPU[mode] ?? .nan, 2)) s), equal \(Set(fingerprints).count == 1)")
            }
            results.append(BulkRun(localSeconds: local, applySeconds: apply, applyCPUSeconds: applyCPU, senderCPUSeconds: senderCPU, contentEqual: equal))
        }
        return results
    }
}
