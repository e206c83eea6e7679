// mmlite-bench: the benchmarks behind `bench/run` (see bench/README.md).
//
// Starts its own throwaway clusters with ClusterHarness, runs every scenario
// several times, writes report.md and chart.svg to --out, prints the results
// table and, last, the machine-readable summary (`key value` per line).
import ClusterHarness
import Foundation
import PostgresClient

enum Bench {
    /// `shared_buffers` of every benchmark cluster when the environment sets
    /// MMLITE_BENCH_SHARED_BUFFERS (e.g. `256MB`); else the harness default,
    /// 32MB, which the committed reports use. For reading how much of a cost
    /// is buffer misses rather than CPU.
    static let sharedBuffers: String? = ProcessInfo.processInfo.environment["MMLITE_BENCH_SHARED_BUFFERS"].flatMap {
        $0.allSatisfy { $0.isLetter || $0.isNumber } && !$0.isEmpty ? $0 : nil
    }

    /// Added to the harness defaults for every benchmark cluster: no
    /// checkpoints in the middle of a measurement.
    static var clusterSettings: [String: String] {
        var settings = ["max_wal_size": "'4GB'", "checkpoint_timeout": "'30min'"]
        if let sharedBuffers { settings["shared_buffers"] = "'\(sharedBuffers)'" }
        return settings
    }
}

struct Options {
    var quick = false
    var out = "bench/results"
    var pgConfig: String?
    var mmlite: String?
    static let scenarios: Set<String> = ["decode", "mesh", "join", "conflicts", "bulk"]
    var only: Set<String> = Options.scenarios
    var decodeRuns: Int?
    var meshRuns: Int?
    var duration: Int?
    var clients = 2
    var rate: Int?
    var joinRows = 1_000_000
    var joinRuns: Int?
    var pglogical = true
    var conflictRuns: Int?
    var conflictTransactions: Int?
    var bulkRows = 200_000
    var bulkRuns: Int?

    static let usage = """
        usage: mmlite-bench [--quick] [--out DIR] [--pg-config PATH] [--mmlite PATH]
                            [--only decode,mesh,join,conflicts,bulk] [--decode-runs N] [--mesh-runs N]
                            [--duration SECONDS] [--clients N] [--rate TPS_PER_NODE]
                            [--join-rows N] [--join-runs N] [--conflict-runs N]
                            [--conflict-transactions N] [--bulk-rows N] [--bulk-runs N] [--no-pglogical]
        """

    static func parse(_ arguments: [String]) throws -> Options {
        var options = Options()
        var iterator = arguments.makeIterator()
        func value(_ flag: String) throws -> String {
            guard let next = iterator.next() else { throw BenchError("\(flag) needs a value\n\(usage)") }
            return next
        }
        func number(_ flag: String) throws -> Int {
            let text = try value(flag)
            guard let parsed = Int(text), parsed > 0 else { throw BenchError("\(flag): not a positive number: \(text)") }
            return parsed
        }
        while let argument = iterator.next() {
            switch argument {
            case "--quick": options.quick = true
            case "--out": options.out = try value(argument)
            case "--pg-config": options.pgConfig = try value(argument)
            case "--mmlite": options.mmlite = try value(argument)
            case "--only":
                options.only = Set(try value(argument).split(separator: ",").map { String($0) })
                let unknown = options.only.subtracting(Options.scenarios)
                guard unknown.isEmpty else { throw BenchError("--only: unknown scenario(s) \(unknown.sorted())") }
            case "--decode-runs": options.decodeRuns = try number(argument)
            case "--mesh-runs": options.meshRuns = try number(argument)
            case "--duration": options.duration = try number(argument)
            case "--clients": options.clients = try number(argument)
            case "--rate": options.rate = try number(argument)
            case "--join-rows": options.joinRows = try number(argument)
            case "--join-runs": options.joinRuns = try number(argument)
            case "--conflict-runs": options.conflictRuns = try number(argument)
            case "--conflict-transactions": options.conflictTransactions = try number(argument)
            case "--bulk-rows": options.bulkRows = try number(argument)
            case "--bulk-runs": options.bulkRuns = try number(argument)
            case "--no-pglogical": options.pglogical = false
            case "-h", "--help": print(usage); exit(0)
            default: throw BenchError("unknown argument \(argument)\n\(usage)")
            }
        }
        return options
    }
}

/// Everything one run measured (also written as JSON next to the report).
struct Results: Codable {
    var mode: String
    var machine: [String: String] = [:]
    var parameters: [String: String] = [:]
    var decode: [DecodeWorkload] = []
    var mesh: [MeshRun] = []
    var meshRate: Int?
    var join: [JoinRun] = []
    var conflicts: [ConflictRun] = []
    var bulk: [BulkRun] = []
    /// Scenarios skipped and why.
    var skipped: [String: String] = [:]
    var seconds: Double = 0
}

func machineFacts(_ installation: PGInstallation) -> [String: String] {
    var facts: [String: String] = [:]
    facts["nproc"] = String(ProcessInfo.processInfo.activeProcessorCount)
    if let meminfo = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
       let line = meminfo.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") }) {
        let kb = Double(line.split(separator: " ").dropFirst().first ?? "") ?? 0
        facts["memory"] = String(format: "%.1f GiB", kb / 1024 / 1024)
    }
    if let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
       let line = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("model name") }) {
        facts["cpu"] = line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
    }
    facts["postgresql"] = installation.version
    facts["os"] = ((try? String(contentsOfFile: "/etc/debian_version", encoding: .utf8)).map { "Debian " + $0.trimmingCharacters(in: .whitespacesAndNewlines) }) ?? "unknown"
    return facts
}

func oneLine(_ text: String) -> String {
    String(text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ").prefix(400))
}

func loadAverage() -> String {
    ((try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "").split(separator: " ").prefix(3).joined(separator: " ")
}

func main() throws -> Int32 {
    _ = benchStart
    let options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
    let started = monotonicSeconds()
    let installation = try options.pgConfig.map { try PGInstallation(pgConfig: $0) } ?? PGInstallation.systemDefault()
    guard installation.hasMMLitePlugin else {
        throw BenchError("the mmlite plugin is not installed into \(installation.pkglibdir): make install PG_CONFIG=\(installation.pgConfig)")
    }
    let workDirectory = options.out + "/tmp"
    try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
    // pgbench scripts must be readable by anyone; the harness runs the servers as postgres.
    chmod(workDirectory, 0o755)

    let quick = options.quick
    let decodeRuns = options.decodeRuns ?? (quick ? 4 : 12)
    let meshRuns = options.meshRuns ?? 3  // a median of 3 even in --quick: TPS ratios of 2 runs swing ±10 %
    let duration = options.duration ?? (quick ? 5 : 20)
    let joinRuns = options.joinRuns ?? (quick ? 1 : 3)
    // The noisiest scenario (a backlog applied in 1–3 s): medians of 3 runs of
    // 20k transactions even in --quick (1 run of 5k scattered ±30 %), 5 of 50k in the full run.
    let conflictTransactions = options.conflictTransactions ?? (quick ? 20_000 : 50_000)
    let conflictRuns = options.conflictRuns ?? (quick ? 3 : 5)
    let bulkRuns = options.bulkRuns ?? (quick ? 3 : 5)
    // The SQL apply trigger (conflict_overhead_sql_pct) in every run of the full
    // benchmark, in the first only with --quick (as before issue 18: 1 run).
    let conflictSQLRuns = quick ? 1 : conflictRuns
    var results = Results(mode: quick ? "quick" : "full")
    results.machine = machineFacts(installation)
    results.machine["load average at start"] = loadAverage()
    results.parameters = [
        "shared_buffers": Bench.sharedBuffers ?? "32MB (harness default)",
        "decode runs": String(decodeRuns), "mesh runs": String(meshRuns), "pgbench duration (s)": String(duration),
        "pgbench clients per node": String(options.clients), "join rows": String(options.joinRows), "join runs": String(joinRuns),
        "conflict transactions": String(conflictTransactions), "conflict runs": String(conflictRuns),
        "conflict runs with the SQL apply trigger": String(min(conflictSQLRuns, conflictRuns)),
        "bulk rows": String(options.bulkRows), "bulk runs": String(bulkRuns),
    ]
    say("mmlite-bench (\(results.mode)): PostgreSQL \(installation.version), \(results.machine["nproc"] ?? "?") CPUs, load \(results.machine["load average at start"] ?? "?")")

    // 1. decode
    if options.only.contains("decode") {
        results.decode = try DecodeScenario(installation: installation, runs: decodeRuns, bigRows: 500_000, smallTransactions: 50_000).run()
    }

    var pglogicalSkipped: String? = nil
    if !options.pglogical {
        pglogicalSkipped = "--no-pglogical"
    } else if !FileManager.default.fileExists(atPath: installation.pkglibdir + "/pglogical.so") {
        pglogicalSkipped = "pglogical is not installed for PostgreSQL \(installation.major) (apt-get install postgresql-\(installation.major)-pglogical)"
    }

    // 2. mesh
    let mesh = MeshScenario(installation: installation, workDirectory: workDirectory, duration: duration,
                            clients: options.clients, preloadRows: quick ? 10_000 : 50_000,
                            pgbench: installation.binary("pgbench"))
    if options.only.contains("mesh") {
        // --quick leaves out native 1→1: only the informational *_1to1 ratio needs it.
        var topologies: [Topology] = quick ? [.mmlite3, .native3, .mmlite2] : [.mmlite3, .native3, .native, .mmlite2]
        if let reason = pglogicalSkipped {
            results.skipped["pglogical"] = reason
        } else {
            topologies.append(.pglogical2)
        }
        if let reason = results.skipped["pglogical"] { say("mesh: skipping pglogical: \(reason)") }
        var rate = options.rate
        var setups: [Topology: MeshScenario.Setup] = [:]
        defer { for setup in setups.values { setup.harness.destroyAll() } }
        for topology in topologies {
            setups[topology] = try mesh.setUp(topology)
            say("mesh: \(topology.rawValue): clusters ready")
        }
        for round in 0..<meshRuns {
            // Round 1 starts with the 3-node mesh, whose unthrottled per-node TPS
            // sets the fixed rate (half of it) unless --rate says; later rounds rotate.
            let order = Array(topologies[(round % topologies.count)...] + topologies[..<(round % topologies.count)])
            for topology in order {
                guard let setup = setups[topology] else { continue }
                let run = try mesh.run(setup, run: round + 1) { maxPhase in
                    if rate == nil {
                        rate = max(10, Int((maxPhase.meanTPSPerNode * 0.5).rounded()))
                        say("mesh: fixed rate for every writer: \(rate ?? 0) tps (half the 3-node mesh's unthrottled per-node TPS)")
                    }
                    return rate
                }
                results.mesh.append(run)
            }
        }
        results.meshRate = rate
    }

    // 3 and 4 run the mmlite tool (`join`, and `apply` for conflict handling).
    let tool = MMLiteTool(path: options.mmlite ?? "", workDirectory: workDirectory)
    if options.only.contains("join") {
        if options.mmlite == nil || !FileManager.default.isExecutableFile(atPath: tool.path) {
            results.skipped["join"] = "the mmlite tool was not built (pass --mmlite PATH)"
        } else {
            let scenario = JoinScenario(installation: installation, tool: tool, rows: options.joinRows, workDirectory: workDirectory)
            do {
                for run in 0..<joinRuns { results.join.append(try scenario.run(number: run)) }
            } catch {
                say("join: failed: \(error)")
                results.skipped["join"] = "failed: " + oneLine(String(describing: error))
            }
        }
        if let reason = results.skipped["join"] { say("join: skipped: \(reason)") }
    }
    // Conflicts and bulk: the local-write phase lasts --duration, or 3 s in --quick
    // (its 10 meshes and 3 bulk runs must fit in the quick run's 12 minutes).
    let conflictMesh = MeshScenario(installation: installation, workDirectory: workDirectory, duration: options.duration ?? (quick ? 3 : duration),
                                    clients: options.clients, preloadRows: mesh.preloadRows, pgbench: mesh.pgbench)
    results.parameters["conflict local-write phase (s)"] = String(conflictMesh.duration)
    if options.only.contains("conflicts") {
        if options.mmlite == nil || !FileManager.default.isExecutableFile(atPath: tool.path) {
            results.skipped["conflicts"] = "the mmlite tool was not built (pass --mmlite PATH)"
        } else {
            var scenario = ConflictScenario(installation: installation, tool: tool, mesh: conflictMesh, transactions: conflictTransactions)
            scenario.sqlRuns = conflictSQLRuns
            if quick { scenario.kept = ConflictScenario.KeptMeshes() }
            defer { scenario.kept?.destroyAll() }
            if let reason = pglogicalSkipped {
                results.skipped["conflicts_pglogical"] = reason
                say("conflicts: skipping pglogical last_update_wins: \(reason)")
            } else {
                scenario.modes.append(.pglogicalLWW)
            }
            do {
                for run in 0..<conflictRuns { results.conflicts.append(try scenario.run(number: run)) }
            } catch {
                say("conflicts: failed: \(error)")
                results.skipped["conflicts"] = "failed: " + oneLine(String(describing: error))
            }
        }
        if let reason = results.skipped["conflicts"] { say("conflicts: skipped: \(reason)") }
    }
    if options.only.contains("bulk") {
        if options.mmlite == nil || !FileManager.default.isExecutableFile(atPath: tool.path) {
            results.skipped["bulk"] = "the mmlite tool was not built (pass --mmlite PATH)"
        } else {
            let scenario = BulkScenario(conflicts: ConflictScenario(installation: installation, tool: tool, mesh: conflictMesh, transactions: conflictTransactions),
                                        rows: options.bulkRows)
            do {
                results.bulk = try scenario.run(runs: bulkRuns)
            } catch {
                say("bulk: failed: \(error)")
                results.skipped["bulk"] = "failed: " + oneLine(String(describing: error))
            }
        }
        if let reason = results.skipped["bulk"] { say("bulk: skipped: \(reason)") }
    }

    results.machine["load average at end"] = loadAverage()
    results.seconds = monotonicSeconds() - started
    let report = Report(results: results)
    try report.write(to: options.out)
    say("wrote \(options.out)/report.md, \(options.out)/chart.svg and \(workDirectory)/results.json in \(fmt(results.seconds, 0)) s")
    print(report.summaryTable())
    print("")
    for (key, value) in report.summary() { print("\(key) \(value)") }
    return report.failures.isEmpty ? 0 : 1
}

do {
    exit(try main())
} catch {
    say("mmlite-bench: \(error)")
    exit(2)
}
