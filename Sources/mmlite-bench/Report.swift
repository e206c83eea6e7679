import Foundation

/// Turns `Results` into report.md, chart.svg, results.json, the results
/// table and the summary lines.
struct Report {
    let results: Results

    // MARK: derived numbers

    func decode(_ key: String) -> DecodeWorkload? { results.decode.first { $0.key == key } }

    func meshRuns(_ topology: Topology) -> [MeshRun] { results.mesh.filter { $0.topology == topology } }

    func meshStat(_ topology: Topology, _ phase: Phase, _ value: (PhaseResult) -> Double) -> Stat {
        Stat(meshRuns(topology).compactMap { $0.phases[phase] }.map(value).filter { $0.isFinite })
    }

    /// The phase catch-up is compared in: the backlog when it ran.
    var catchupPhase: Phase {
        for phase in [Phase.backlog, .rate] where results.mesh.contains(where: { $0.phases[phase] != nil }) { return phase }
        return .max
    }
    func phaseDescription(_ phase: Phase) -> String {
        switch phase {
        case .max: return "unthrottled"
        case .rate: return "streaming at the same fixed rate per writer"
        case .backlog: return "backlog of \(results.parameters["pgbench duration (s)"] ?? "?") s at the same fixed rate per writer, subscriptions disabled"
        }
    }

    var decodeRatioLocal: Double? {
        let ratios = ["big_txn", "small_txns"].compactMap { decode($0) }.map { Stat($0.ratios).median }
        return ratios.isEmpty ? nil : geometricMean(ratios)
    }
    var decodeRatioHalfOrigin: Double? { decode("half_origin").map { Stat($0.ratios).median } }
    /// Against native one-way replication with the same per-node load and
    /// the same links (3-node fan-out): what the mesh could reach at best on
    /// this machine.
    var mesh3CatchupVsNative: Double? { catchupRatio(.mmlite3, .native3) }
    /// Against one publisher and one subscriber: 1/6 of the mesh's
    /// replication work (one walsender and one apply worker instead of six).
    var mesh3CatchupVsNative1to1: Double? { catchupRatio(.mmlite3, .native) }
    func catchupRatio(_ mesh: Topology, _ baseline: Topology) -> Double? {
        let mesh = meshStat(mesh, catchupPhase) { $0.catchupSeconds }
        let native = meshStat(baseline, catchupPhase) { $0.catchupSeconds }
        guard !mesh.isEmpty, !native.isEmpty else { return nil }
        return mesh.median / native.median
    }
    var mesh2TPSVsPglogical: Double? {
        let mesh = meshStat(.mmlite2, .max) { $0.totalTPS }
        let pglogical = meshStat(.pglogical2, .max) { $0.totalTPS }
        guard !mesh.isEmpty, !pglogical.isEmpty else { return nil }
        return mesh.median / pglogical.median
    }
    /// The copy phase of `mmlite join` (connect, snapshot, COPY of every
    /// table, commit) / `pg_dump --data-only | psql` of the same table in the
    /// same run. (Until issue 18 this key divided the whole command's time:
    /// that is `join_total_vs_pgdump` now.)
    var joinCopyVsPgdump: Double? {
        let copies = results.join.compactMap(\.copySeconds)
        guard !copies.isEmpty else { return nil }
        return Stat(copies).median / Stat(results.join.map(\.dumpSeconds)).median
    }
    var joinTotalVsPgdump: Double? {
        guard !results.join.isEmpty else { return nil }
        return Stat(results.join.map(\.joinSeconds)).median / Stat(results.join.map(\.dumpSeconds)).median
    }
    /// The join's fixed part: its wall time minus the copy phase.
    var joinSetupSeconds: Double? {
        let setups = results.join.compactMap(\.setupSeconds)
        return setups.isEmpty ? nil : Stat(setups).median
    }
    func conflictApply(_ mode: ConflictMode) -> Stat { Stat(results.conflicts.compactMap { $0.applySeconds[mode] }) }
    func conflictLocal(_ mode: ConflictMode) -> Stat { Stat(results.conflicts.compactMap { $0.localTPS[mode] }) }
    /// Extra backlog apply time with conflict handling, as installed by
    /// default (the native apply trigger).
    var conflictOverheadPct: Double? { conflictOverhead(.native) }
    var conflictOverheadSQLPct: Double? { conflictOverhead(.sql) }
    /// Median over the runs of a ratio of two modes of the same run.
    func pairedConflict(_ value: (ConflictRun) -> Double?) -> Stat {
        Stat(results.conflicts.compactMap(value).filter(\.isFinite))
    }
    /// Apply throughput with last-update-wins (native apply) / plain's: plain time / native time, per run.
    var conflictApplyVsPlain: Stat { pairedConflict { run in run.applySeconds[.plain].flatMap { plain in run.applySeconds[.native].map { plain / $0 } } } }
    var conflictLocalVsPlain: Stat { pairedConflict { run in run.localTPS[.native].flatMap { native in run.localTPS[.plain].map { native / $0 } } } }
    /// mmlite's last-update-wins apply throughput / pglogical's: pglogical time / native time, per run.
    var conflictApplyVsPglogicalLWW: Stat { pairedConflict { run in run.applySeconds[.pglogicalLWW].flatMap { pgl in run.applySeconds[.native].map { pgl / $0 } } } }
    /// CPU seconds of the apply worker (or walsender) per mode, over the runs that measured it.
    func conflictCPU(_ mode: ConflictMode, _ value: (ConflictRun) -> [ConflictMode: Double]?) -> Stat {
        Stat(results.conflicts.compactMap { value($0)?[mode] })
    }
    /// The apply worker's CPU for the backlog: plain's / native's, per run (higher is better, like the throughput ratio).
    var conflictApplyCPUVsPlain: Stat { pairedConflict { run in run.applyCPUSeconds?[.plain].flatMap { plain in run.applyCPUSeconds?[.native].map { plain / $0 } } } }
    func median(_ stat: Stat) -> Double? { stat.isEmpty ? nil : stat.median }

    func pairedBulk(_ value: (BulkRun) -> Double?) -> Stat { Stat(results.bulk.compactMap(value).filter(\.isFinite)) }
    /// One 200k-row UPDATE: plain local time / opted-in local time (a throughput ratio), per run.
    var conflictBulkLocalVsPlain: Stat { pairedBulk { run in run.localSeconds[.plain].flatMap { plain in run.localSeconds[.native].map { plain / $0 } } } }
    var conflictBulkApplyVsPlain: Stat { pairedBulk { run in run.applySeconds[.plain].flatMap { plain in run.applySeconds[.native].map { plain / $0 } } } }
    func bulkStat(_ mode: ConflictMode, _ value: (BulkRun) -> [ConflictMode: Double]) -> Stat { Stat(results.bulk.compactMap { value($0)[mode] }) }
    func bulkCPU(_ mode: ConflictMode, _ value: (BulkRun) -> [ConflictMode: Double]?) -> Stat { Stat(results.bulk.compactMap { value($0)?[mode] }) }
    var conflictBulkApplyCPUVsPlain: Stat { pairedBulk { run in run.applyCPUSeconds?[.plain].flatMap { plain in run.applyCPUSeconds?[.native].map { plain / $0 } } } }

    func conflictOverhead(_ mode: ConflictMode) -> Double? {
        guard !results.conflicts.isEmpty else { return nil }
        return (conflictApply(mode).median / conflictApply(.plain).median - 1) * 100
    }

    /// The machine-readable summary, in the issue's order; absent keys omitted.
    func summary() -> [(String, String)] {
        var lines: [(String, String)] = []
        func add(_ key: String, _ value: Double?, _ digits: Int = 3) {
            if let value, value.isFinite { lines.append((key, fmt(value, digits))) }
        }
        add("decode_ratio_local", decodeRatioLocal)
        add("decode_ratio_half_origin", decodeRatioHalfOrigin)
        add("mesh3_catchup_vs_native", mesh3CatchupVsNative)
        add("mesh3_catchup_vs_native_1to1", mesh3CatchupVsNative1to1)
        add("mesh2_tps_vs_pglogical", mesh2TPSVsPglogical)
        add("join_copy_vs_pgdump", joinCopyVsPgdump)
        add("join_setup_seconds", joinSetupSeconds, 2)
        add("join_total_vs_pgdump", joinTotalVsPgdump)
        add("conflict_overhead_pct", conflictOverheadPct, 1)
        add("conflict_overhead_sql_pct", conflictOverheadSQLPct, 1)
        add("conflict_apply_vs_plain", median(conflictApplyVsPlain))
        add("conflict_local_vs_plain", median(conflictLocalVsPlain))
        add("conflict_apply_vs_pglogical_lww", median(conflictApplyVsPglogicalLWW))
        add("conflict_bulk_local_vs_plain", median(conflictBulkLocalVsPlain))
        add("conflict_bulk_apply_vs_plain", median(conflictBulkApplyVsPlain))
        add("conflict_apply_cpu_vs_plain", median(conflictApplyCPUVsPlain))
        add("conflict_bulk_apply_cpu_vs_plain", median(conflictBulkApplyCPUVsPlain))
        return lines
    }

    /// Correctness problems: any of them makes the run fail.
    var failures: [String] {
        var problems: [String] = []
        for run in results.mesh {
            for (phase, result) in run.phases.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                if !result.contentEqual { problems.append("\(run.topology.rawValue) run \(run.run) \(phase.rawValue): content differs between nodes") }
                if !result.catchupSeconds.isFinite { problems.append("\(run.topology.rawValue) run \(run.run) \(phase.rawValue): did not catch up") }
            }
        }
        for (index, run) in results.join.enumerated() where !run.contentEqual { problems.append("join run \(index + 1): content differs") }
        for (index, run) in results.conflicts.enumerated() where !run.contentEqual { problems.append("conflicts run \(index + 1): content differs") }
        for (index, run) in results.bulk.enumerated() where !run.contentEqual { problems.append("bulk run \(index + 1): content differs") }
        return problems
    }

    // MARK: the results table (stdout and report)

    struct Row { let key: String; let what: String; let value: String; let target: String; let met: String }

    func rows() -> [Row] {
        func verdict(_ ok: Bool?) -> String { ok.map { $0 ? "yes" : "**no**" } ?? "—" }
        var rows: [Row] = []
        rows.append(Row(key: "decode_ratio_local", what: "pgoutput time / mmlite time, local changes (geometric mean of the 500k-row and 50k-transaction medians)",
                        value: decodeRatioLocal.map { fmt($0, 3) } ?? "n/a", target: "≥ 0.95", met: verdict(decodeRatioLocal.map { $0 >= 0.95 })))
        rows.append(Row(key: "decode_ratio_half_origin", what: "pgoutput time / mmlite time, half the transactions with an origin",
                        value: decodeRatioHalfOrigin.map { fmt($0, 3) } ?? "n/a", target: "> 1", met: verdict(decodeRatioHalfOrigin.map { $0 > 1 })))
        rows.append(Row(key: "mesh3_catchup_vs_native", what: "3-node mmlite catch-up / one-way native catch-up, same per-node load and links (3-node fan-out, each node publishing its own writes to the two others) (\(phaseDescription(catchupPhase)))",
                        value: mesh3CatchupVsNative.map { fmt($0, 3) } ?? "n/a", target: "≤ 2", met: verdict(mesh3CatchupVsNative.map { $0 <= 2 })))
        rows.append(Row(key: "mesh3_catchup_vs_native_1to1", what: "3-node mmlite catch-up / native 1→1 catch-up (one writer, one subscriber: a sixth of the replication work on the same CPUs)",
                        value: mesh3CatchupVsNative1to1.map { fmt($0, 3) } ?? "n/a", target: "—", met: "—"))
        rows.append(Row(key: "mesh2_tps_vs_pglogical", what: "2-node mmlite total TPS / 2-node pglogical total TPS (unthrottled)",
                        value: mesh2TPSVsPglogical.map { fmt($0, 3) } ?? "n/a (\(results.skipped["pglogical"] ?? "not run"))", target: "≥ 1", met: verdict(mesh2TPSVsPglogical.map { $0 >= 1 })))
        let joinRows = compact(results.parameters["join rows"].flatMap { Int($0) } ?? 0)
        let joinMissing = "not measured (\(results.skipped["join"] ?? "not run"))"
        rows.append(Row(key: "join_copy_vs_pgdump", what: "`mmlite join`'s copy phase / `pg_dump --data-only \\| psql`, \(joinRows) rows (until issue 18: the whole command; that is `join_total_vs_pgdump` now)",
                        value: joinCopyVsPgdump.map { fmt($0, 3) } ?? joinMissing, target: "≤ 1.2", met: verdict(joinCopyVsPgdump.map { $0 <= 1.2 })))
        rows.append(Row(key: "join_setup_seconds", what: "`mmlite join`'s fixed part: its wall time minus the copy phase (preflight, slots, pause, wiring, catch-up), s",
                        value: joinSetupSeconds.map { fmt($0, 2) } ?? joinMissing, target: "—", met: "—"))
        rows.append(Row(key: "join_total_vs_pgdump", what: "the whole `mmlite join` command / `pg_dump \\| psql`, \(joinRows) rows",
                        value: joinTotalVsPgdump.map { fmt($0, 3) } ?? joinMissing, target: "—", met: "—"))
        rows.append(Row(key: "conflict_overhead_pct", what: "extra apply time with conflict handling (last-update-wins, native apply trigger: the default), %",
                        value: conflictOverheadPct.map { fmt($0, 1) } ?? "not measured (\(results.skipped["conflicts"] ?? "not run"))", target: "≤ 100 (apply ≥ 0.5× plain)", met: verdict(conflictOverheadPct.map { $0 <= 100 })))
        rows.append(Row(key: "conflict_overhead_sql_pct", what: "the same with the SQL apply trigger (`conflict_apply = \"sql\"`, or a node without mmlite.so), %",
                        value: conflictOverheadSQLPct.map { fmt($0, 1) } ?? "not measured (\(results.skipped["conflicts"] ?? "not run"))", target: "—", met: "—"))
        let conflictsMissing = "not measured (\(results.skipped["conflicts"] ?? "not run"))"
        rows.append(Row(key: "conflict_apply_vs_plain", what: "backlog apply throughput, last-update-wins (native apply) / plain, median of the per-run ratios",
                        value: median(conflictApplyVsPlain).map { fmt($0, 3) } ?? conflictsMissing, target: "≥ 0.8", met: verdict(median(conflictApplyVsPlain).map { $0 >= 0.8 })))
        rows.append(Row(key: "conflict_local_vs_plain", what: "local pgbench TPS on n1, last-update-wins / plain, median of the per-run ratios",
                        value: median(conflictLocalVsPlain).map { fmt($0, 3) } ?? conflictsMissing, target: "≥ 0.9", met: verdict(median(conflictLocalVsPlain).map { $0 >= 0.9 })))
        rows.append(Row(key: "conflict_apply_vs_pglogical_lww", what: "backlog apply throughput, mmlite last-update-wins (native apply) / pglogical 2.4 `last_update_wins`, median of the per-run ratios",
                        value: median(conflictApplyVsPglogicalLWW).map { fmt($0, 3) } ?? "not measured (\(results.skipped["conflicts_pglogical"] ?? results.skipped["conflicts"] ?? "not run"))", target: "≥ 1", met: verdict(median(conflictApplyVsPglogicalLWW).map { $0 >= 1 })))
        let bulkMissing = "not measured (\(results.skipped["bulk"] ?? "not run"))"
        let bulkRows = compact(results.parameters["bulk rows"].flatMap { Int($0) } ?? 0)
        rows.append(Row(key: "conflict_bulk_local_vs_plain", what: "one `UPDATE` of all \(bulkRows) rows on n1: plain time / opted-in time, median of the per-run ratios",
                        value: median(conflictBulkLocalVsPlain).map { fmt($0, 3) } ?? bulkMissing, target: "≥ 0.5", met: verdict(median(conflictBulkLocalVsPlain).map { $0 >= 0.5 })))
        rows.append(Row(key: "conflict_bulk_apply_vs_plain", what: "the same statement applied on n2 (backlog, slots settled): plain time / opted-in time, median of the per-run ratios",
                        value: median(conflictBulkApplyVsPlain).map { fmt($0, 3) } ?? bulkMissing, target: "≥ 0.5", met: verdict(median(conflictBulkApplyVsPlain).map { $0 >= 0.5 })))
        rows.append(Row(key: "conflict_apply_cpu_vs_plain", what: "CPU of n2's apply worker for the backlog, plain / last-update-wins (native apply), median of the per-run ratios (less noisy than wall time on a shared machine)",
                        value: median(conflictApplyCPUVsPlain).map { fmt($0, 3) } ?? conflictsMissing, target: "—", met: "—"))
        rows.append(Row(key: "conflict_bulk_apply_cpu_vs_plain", what: "the same for the bulk statement's apply",
                        value: median(conflictBulkApplyCPUVsPlain).map { fmt($0, 3) } ?? bulkMissing, target: "—", met: "—"))
        return rows
    }

    func summaryTable() -> String {
        var lines = ["| key | value | target | met | what |", "|---|---|---|---|---|"]
        for row in rows() { lines.append("| `\(row.key)` | \(row.value) | \(row.target) | \(row.met) | \(row.what) |") }
        return lines.joined(separator: "\n")
    }

    // MARK: report.md

    func markdown() -> String {
        var out: [String] = []
        let date = ISO8601DateFormatter().string(from: Date())
        out.append("# mmlite benchmark report")
        out.append("")
        out.append("`bench/run\(results.mode == "quick" ? " --quick" : "")`, \(date), \(fmt(results.seconds / 60, 1)) minutes. Every number is the median of the runs, with (min–max).")
        out.append("")
        out.append("| machine | |")
        out.append("|---|---|")
        for key in ["cpu", "nproc", "memory", "os", "postgresql", "load average at start", "load average at end"] {
            if let value = results.machine[key] { out.append("| \(key) | \(value) |") }
        }
        for (key, value) in results.parameters.sorted(by: { $0.key < $1.key }) { out.append("| \(key) | \(value) |") }
        if let rate = results.meshRate { out.append("| fixed rate per writer (tps) | \(rate) |") }
        out.append("")
        out.append("## Summary")
        out.append("")
        out.append(summaryTable())
        out.append("")
        if !failures.isEmpty {
            out.append("**Correctness problems:** " + failures.joined(separator: "; "))
            out.append("")
        }
        out.append("![chart](chart.svg)")
        out.append("")

        out.append("## 1. Decode throughput (same WAL, `pg_logical_slot_peek_binary_changes`)")
        out.append("")
        if results.decode.isEmpty {
            out.append("Not run.")
        } else {
            out.append("| workload | plugin | messages | seconds | messages/s | pgoutput time / mmlite time |")
            out.append("|---|---|---:|---|---|---|")
            for workload in results.decode {
                for plugin in DecodeScenario.plugins {
                    let seconds = Stat(workload.seconds[plugin] ?? [])
                    out.append("| \(workload.title) | \(plugin) | \(workload.messages[plugin] ?? 0) | \(mmm(seconds, 3) { fmt($0, 3) }) | \(mmm(workload.messagesPerSecond(plugin)) { human($0) }) | \(plugin == "mmlite" ? mmm(Stat(workload.ratios), 3) { fmt($0, 3) } : "") |")
                }
            }
        }
        out.append("")

        out.append("## 2. Mesh throughput, lag and catch-up (pgbench on every writer at once)")
        out.append("")
        if results.mesh.isEmpty {
            out.append("Not run.")
        } else {
            out.append("Phases, on the same fresh clusters: `max` — every writer as fast as its \(results.parameters["pgbench clients per node"] ?? "?") clients go; `rate` — every writer at the same fixed rate (`pgbench -R \(results.meshRate.map(String.init) ?? "?")`), streaming; `backlog` — the same rate with every subscription disabled, then enabled: catch-up is the time to apply the backlog. Lag: largest `pg_current_wal_lsn() - confirmed_flush_lsn` of any slot, sampled every second (for `backlog`: the backlog's size); replay lag from `pg_stat_replication`. Catch-up: from the end of pgbench (`backlog`: from enabling the subscriptions) until every node holds every writer's last change (a marker row written after pgbench ended). Content: fingerprints (row count + md5 of all rows) of every node equal after every phase of every run.")
            out.append("")
            out.append("| topology | phase | writers | TPS per node | total TPS | lag max | replay lag max (ms) | txns each node applies | catch-up (s) | apply rate (txns/s per node) | content equal | log errors |")
            out.append("|---|---|---:|---|---|---|---|---|---|---|---|---:|")
            for topology in Topology.allCases {
                let runs = meshRuns(topology)
                guard !runs.isEmpty else {
                    if topology == .pglogical2 { out.append("| \(topology.rawValue) | — | — | skipped: \(results.skipped["pglogical"] ?? "not run") | | | | | | | | |") }
                    continue
                }
                for phase in [Phase.max, .rate, .backlog] where runs.contains(where: { $0.phases[phase] != nil }) {
                    let phases = runs.compactMap { $0.phases[phase] }
                    let equal = phases.allSatisfy(\.contentEqual)
                    out.append("| \(topology.rawValue) | \(phase.rawValue) | \(topology.writers) | \(mmm(meshStat(topology, phase) { $0.meanTPSPerNode }) { fmt($0, 0) }) | \(mmm(meshStat(topology, phase) { $0.totalTPS }) { fmt($0, 0) }) | \(mmm(meshStat(topology, phase) { $0.lagBytesMax }) { bytesHuman($0) }) | \(mmm(meshStat(topology, phase) { $0.replayLagMax * 1000 }) { fmt($0, 0) }) | \(mmm(meshStat(topology, phase) { Double($0.transactionsToApply) }) { human($0) }) | \(mmm(meshStat(topology, phase) { $0.catchupSeconds }) { fmt($0, 3) }) | \(phase == .backlog ? mmm(meshStat(topology, phase) { Double($0.transactionsToApply) / $0.catchupSeconds }) { fmt($0, 0) } : "") | \(equal ? "yes, \(phases.count)/\(phases.count)" : "**NO**") | \(runs.map(\.errors.count).reduce(0, +)) |")
                }
            }
            let errors = results.mesh.flatMap { run in run.errors.map { "\(run.topology.rawValue) run \(run.run): \($0)" } }
            if !errors.isEmpty {
                out.append("")
                out.append("Problems logged:")
                out.append("")
                for error in errors.prefix(20) { out.append("- `\(error.prefix(300))`") }
            }
        }
        out.append("")

        out.append("## 3. Join copy")
        out.append("")
        if results.join.isEmpty {
            out.append("Not yet available: \(results.skipped["join"] ?? "not run").")
        } else {
            out.append("| | seconds |")
            out.append("|---|---|")
            out.append("| `mmlite join n3 --from n1` (running 2-node mesh), whole command | \(mmm(Stat(results.join.map(\.joinSeconds))) { fmt($0, 2) }) |")
            out.append("| of which the copy phase (connect, snapshot, COPY, commit) | \(mmm(Stat(results.join.compactMap(\.copySeconds))) { fmt($0, 2) }) |")
            out.append("| of which the rest (preflight, slots, pause, wiring, catch-up) | \(mmm(Stat(results.join.compactMap(\.setupSeconds))) { fmt($0, 2) }) |")
            out.append("| `pg_dump --data-only -t join_t \\| psql` | \(mmm(Stat(results.join.map(\.dumpSeconds))) { fmt($0, 2) }) |")
            out.append("")
            out.append("Content equal in every run: \(results.join.allSatisfy(\.contentEqual) ? "yes" : "**no**").")
        }
        out.append("")

        out.append("## 4. Conflict handling overhead")
        out.append("")
        if results.conflicts.isEmpty {
            out.append("Not yet available: \(results.skipped["conflicts"] ?? "not run").")
        } else {
            let runs = results.conflicts
            let plainApply = conflictApply(.plain).median, plainLocal = conflictLocal(.plain).median
            out.append("| | plain | last-update-wins, native apply | last-update-wins, SQL apply | pglogical 2.4, `last_update_wins` |")
            out.append("|---|---|---|---|---|")
            out.append("| backlog apply time (s) | \(mmm(conflictApply(.plain))) | \(mmm(conflictApply(.native))) | \(mmm(conflictApply(.sql))) | \(mmm(conflictApply(.pglogicalLWW))) |")
            out.append("| apply throughput vs plain (medians) | 1× | \(fmt(plainApply / conflictApply(.native).median, 3))× | \(fmt(plainApply / conflictApply(.sql).median, 3))× | \(fmt(plainApply / conflictApply(.pglogicalLWW).median, 3))× |")
            out.append("| apply throughput vs plain (per run) | 1× | \(mmm(conflictApplyVsPlain, 3) { fmt($0, 3) }) | \(mmm(pairedConflict { run in run.applySeconds[.plain].flatMap { p in run.applySeconds[.sql].map { p / $0 } } }, 3) { fmt($0, 3) }) | \(mmm(pairedConflict { run in run.applySeconds[.plain].flatMap { p in run.applySeconds[.pglogicalLWW].map { p / $0 } } }, 3) { fmt($0, 3) }) |")
            out.append("| backlog: n2's apply worker CPU (s) | \(mmm(conflictCPU(.plain, \.applyCPUSeconds))) | \(mmm(conflictCPU(.native, \.applyCPUSeconds))) | \(mmm(conflictCPU(.sql, \.applyCPUSeconds))) | \(mmm(conflictCPU(.pglogicalLWW, \.applyCPUSeconds))) |")
            out.append("| backlog: n1's walsender CPU (s) | \(mmm(conflictCPU(.plain, \.senderCPUSeconds))) | \(mmm(conflictCPU(.native, \.senderCPUSeconds))) | \(mmm(conflictCPU(.sql, \.senderCPUSeconds))) | \(mmm(conflictCPU(.pglogicalLWW, \.senderCPUSeconds))) |")
            out.append("| local TPS (n1) | \(mmm(conflictLocal(.plain)) { fmt($0, 0) }) | \(mmm(conflictLocal(.native)) { fmt($0, 0) }) | \(mmm(conflictLocal(.sql)) { fmt($0, 0) }) | \(mmm(conflictLocal(.pglogicalLWW)) { fmt($0, 0) }) |")
            out.append("| local TPS vs plain (medians) | 1× | \(fmt(conflictLocal(.native).median / plainLocal, 3))× | \(fmt(conflictLocal(.sql).median / plainLocal, 3))× | \(fmt(conflictLocal(.pglogicalLWW).median / plainLocal, 3))× |")
            out.append("")
            out.append("\(runs.count) run(s) of \(results.parameters["conflict transactions"] ?? "?") transactions (one UPDATE of an existing row, one INSERT of a new key); the mode order rotates between runs. Local writes are captured by the native trigger in the native mode and by the plpgsql function in the SQL mode (docs/conflicts.md, Native capture). pglogical: 2-node bidirectional (`forward_origins := '{}'`), `pglogical.conflict_resolution = last_update_wins`, `track_commit_timestamp = on`, other settings default (conflicts are logged at `LOG`)\(results.skipped["conflicts_pglogical"].map { "; **not run**: \($0)" } ?? ""). CPU: user + system time of n2's apply worker and n1's walsender, both started when the subscription was enabled, read from `/proc` when the marker arrived.")
            out.append("")
            out.append("Content equal in every run: \(runs.allSatisfy(\.contentEqual) ? "yes" : "**no**").")
        }
        out.append("")

        out.append("## 5. One bulk statement on an opted-in table")
        out.append("")
        if results.bulk.isEmpty {
            out.append("Not yet available: \(results.skipped["bulk"] ?? "not run").")
        } else {
            out.append("| | plain | last-update-wins, native apply | ratio (plain / opted-in, per run) |")
            out.append("|---|---|---|---|")
            out.append("| `UPDATE bulk_t SET v = v + 1, at = now()` on n1 (s) | \(mmm(bulkStat(.plain, \.localSeconds))) | \(mmm(bulkStat(.native, \.localSeconds))) | \(mmm(conflictBulkLocalVsPlain, 3) { fmt($0, 3) }) |")
            out.append("| applied on n2 (s) | \(mmm(bulkStat(.plain, \.applySeconds))) | \(mmm(bulkStat(.native, \.applySeconds))) | \(mmm(conflictBulkApplyVsPlain, 3) { fmt($0, 3) }) |")
            out.append("| n2's apply worker CPU (s) | \(mmm(bulkCPU(.plain, \.applyCPUSeconds))) | \(mmm(bulkCPU(.native, \.applyCPUSeconds))) | \(mmm(conflictBulkApplyCPUVsPlain, 3) { fmt($0, 3) }) |")
            out.append("| n1's walsender CPU (s) | \(mmm(bulkCPU(.plain, \.senderCPUSeconds))) | \(mmm(bulkCPU(.native, \.senderCPUSeconds))) | |")
            out.append("")
            out.append("\(results.bulk.count) run(s) on the same two 2-node meshes (\(results.parameters["bulk rows"] ?? "?") rows preloaded alike on both nodes; order alternating; `VACUUM bulk_t` on every node before each run). n2's subscription from n1 is disabled (slots settled first) while the statement runs, then enabled: apply time is from enabling until a marker written after the statement arrives; CPU as in section 4.")
            out.append("")
            out.append("Content equal in every run: \(results.bulk.allSatisfy(\.contentEqual) ? "yes" : "**no**").")
        }
        out.append("")
        return out.joined(separator: "\n")
    }

    // MARK: chart.svg

    struct Bar { let label: String; let stat: Stat; let color: String }

    /// One bar panel with min–max whiskers and optional reference lines.
    func panel(x: Double, y: Double, width: Double, height: Double, title: String, unit: String,
               bars: [Bar], references: [(Double, String)] = [], digits: Int = 2) -> String {
        var svg = ""
        let top = y + 34, bottom = y + height - 46, left = x + 50, right = x + width - 10
        let maxValue = max((bars.map { $0.stat.max }.filter(\.isFinite) + references.map(\.0)).max() ?? 1, 1e-9) * 1.15
        func py(_ value: Double) -> Double { bottom - (bottom - top) * value / maxValue }
        svg += "<text x=\"\(x + width / 2)\" y=\"\(y + 16)\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">\(escape(title))</text>\n"
        svg += "<text x=\"\(x + 4)\" y=\"\(y + 28)\" font-size=\"10\" fill=\"#555\">\(escape(unit))</text>\n"
        svg += "<line x1=\"\(left)\" y1=\"\(bottom)\" x2=\"\(right)\" y2=\"\(bottom)\" stroke=\"#333\"/>\n"
        svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(bottom)\" stroke=\"#333\"/>\n"
        for tick in 0...4 {
            let value = maxValue * Double(tick) / 4
            svg += "<text x=\"\(left - 4)\" y=\"\(py(value) + 3)\" text-anchor=\"end\" font-size=\"9\" fill=\"#555\">\(fmt(value, value < 10 ? 2 : 0))</text>\n"
            svg += "<line x1=\"\(left)\" y1=\"\(py(value))\" x2=\"\(right)\" y2=\"\(py(value))\" stroke=\"#eee\"/>\n"
        }
        let slot = (right - left) / Double(max(bars.count, 1))
        for (index, bar) in bars.enumerated() where !bar.stat.isEmpty {
            let center = left + slot * (Double(index) + 0.5)
            let barWidth = min(slot * 0.6, 60)
            svg += "<rect x=\(q(center - barWidth / 2)) y=\(q(py(bar.stat.median))) width=\(q(barWidth)) height=\(q(bottom - py(bar.stat.median))) fill=\"\(bar.color)\"/>\n"
            if bar.stat.values.count > 1 {
                svg += "<line x1=\(q(center)) y1=\(q(py(bar.stat.min))) x2=\(q(center)) y2=\(q(py(bar.stat.max))) stroke=\"#000\"/>\n"
                for value in [bar.stat.min, bar.stat.max] {
                    svg += "<line x1=\(q(center - 5)) y1=\(q(py(value))) x2=\(q(center + 5)) y2=\(q(py(value))) stroke=\"#000\"/>\n"
                }
            }
            svg += "<text x=\(q(center)) y=\(q(py(bar.stat.max) - 4)) text-anchor=\"middle\" font-size=\"9\">\(fmt(bar.stat.median, digits))</text>\n"
            var lineY = bottom + 12
            for part in bar.label.split(separator: "\n") {
                svg += "<text x=\(q(center)) y=\(q(lineY)) text-anchor=\"middle\" font-size=\"9\">\(escape(String(part)))</text>\n"
                lineY += 11
            }
        }
        for (value, label) in references {
            svg += "<line x1=\(q(left)) y1=\(q(py(value))) x2=\(q(right)) y2=\(q(py(value))) stroke=\"#c00\" stroke-dasharray=\"4 3\"/>\n"
            svg += "<text x=\(q(right - 2)) y=\(q(py(value) - 3)) text-anchor=\"end\" font-size=\"9\" fill=\"#c00\">\(escape(label))</text>\n"
        }
        return svg
    }

    func q(_ value: Double) -> String { "\"" + String(format: "%.1f", value) + "\"" }
    func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    func chart() -> String {
        let width = 1500.0, height = 300.0
        let mmliteColor = "#2b6cb0", pgoutputColor = "#a0aec0", nativeColor = "#718096", pglogicalColor = "#dd6b20"
        func color(_ topology: Topology) -> String {
            switch topology {
            case .native, .native3: return nativeColor
            case .pglogical2: return pglogicalColor
            default: return mmliteColor
            }
        }
        let labels = ["big_txn": "500k-row\ntransaction", "small_txns": "50k single-row\ntransactions", "half_origin": "50k transactions,\nhalf with origin"]
        let decodeBars = results.decode.map { Bar(label: labels[$0.key] ?? $0.key, stat: Stat($0.ratios), color: mmliteColor) }
        let shortName: [Topology: String] = [.native: "native\n1→1", .native3: "native\nfan-out 3", .mmlite2: "mmlite\n2 nodes", .mmlite3: "mmlite\n3 nodes", .pglogical2: "pglogical\n2 nodes"]
        let present = Topology.allCases.filter { !meshRuns($0).isEmpty }
        let tpsBars = present.map { Bar(label: shortName[$0] ?? "", stat: meshStat($0, .max) { $0.meanTPSPerNode }, color: color($0)) }
        let streamingBars = present.map { Bar(label: shortName[$0] ?? "", stat: meshStat($0, .rate) { $0.catchupSeconds * 1000 }, color: color($0)) }
        let backlogBars = present.map { Bar(label: shortName[$0] ?? "", stat: meshStat($0, .backlog) { $0.catchupSeconds }, color: color($0)) }
        let conflictModes: [(ConflictMode, String, String)] = [(.plain, "plain", pgoutputColor), (.native, "LWW\nnative apply", mmliteColor), (.sql, "LWW\nSQL apply", nativeColor), (.pglogicalLWW, "pglogical\nLWW", pglogicalColor)]
        let conflictBars = results.conflicts.isEmpty ? [] : conflictModes.map { Bar(label: $0.1, stat: conflictApply($0.0), color: $0.2) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        let w = width / 5
        svg += panel(x: 0, y: 0, width: w, height: height - 20, title: "Decode: pgoutput / mmlite time",
                     unit: "ratio (higher = mmlite faster)", bars: decodeBars, references: [(1, "1.0"), (0.95, "0.95")], digits: 3)
        svg += panel(x: w, y: 0, width: w, height: height - 20, title: "Unthrottled TPS per writer",
                     unit: "transactions/s", bars: tpsBars, digits: 0)
        svg += panel(x: 2 * w, y: 0, width: w, height: height - 20, title: "Catch-up, streaming at fixed rate",
                     unit: "milliseconds (lower is better)", bars: streamingBars, digits: 0)
        svg += panel(x: 3 * w, y: 0, width: w, height: height - 20, title: "Catch-up of a backlog",
                     unit: "seconds (lower is better)", bars: backlogBars, digits: 2)
        svg += panel(x: 4 * w, y: 0, width: w, height: height - 20, title: "Conflict handling: backlog apply",
                     unit: "seconds (lower is better)", bars: conflictBars, digits: 2)
        svg += "<text x=\"\(width / 2)\" y=\"\(height - 6)\" text-anchor=\"middle\" font-size=\"10\" fill=\"#555\">bench/run\(results.mode == "quick" ? " --quick" : ""), PostgreSQL \(results.machine["postgresql"] ?? "?"), \(results.machine["nproc"] ?? "?") CPUs; bars: median, whiskers: min–max of the runs</text>\n"
        svg += "</svg>\n"
        return svg
    }

    func write(to directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory + "/tmp", withIntermediateDirectories: true)
        try markdown().write(toFile: directory + "/report.md", atomically: true, encoding: .utf8)
        try chart().write(toFile: directory + "/chart.svg", atomically: true, encoding: .utf8)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try encoder.encode(results).write(to: URL(fileURLWithPath: directory + "/tmp/results.json"))
    }
}
