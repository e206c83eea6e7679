import ArgumentParser
import Foundation
import MMLiteCore
import PostgresClient

struct JoinCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "join",
        abstract: "Add a configured node to the running mesh: copy its data from one member, online and exactly.",
        discussion: """
        Creates every other member's slot for NODE first, pauses SOURCE's subscriptions for a
        moment to read how far SOURCE applied each member and export a snapshot, copies every
        table in that snapshot, starts each member's slot exactly where the copy ends, then
        wires NODE in both ways and waits until it has caught up. User writes are never
        blocked. Re-run after an interruption: it continues (or redoes the copy). See
        docs/operations.md.
        Exit code: 0 joined (or already a member), 1 a statement failed before anything
        changed, 2 a check failed (nothing changed), 69 a node is unreachable, 75 stopped
        part-way (re-run to finish), 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The node to add (it must be in the configuration file).") var node: String
    @Option(help: ArgumentHelp("The member to copy the data from.", valueName: "node")) var from: String
    @Flag(help: "Create the tables missing on NODE from SOURCE's definitions first (pg_dump --schema-only).") var copySchema = false
    @Flag(help: "Copy into tables that are not empty (they are emptied first).") var force = false
    @Flag(help: "Print the procedure with the SQL per node and change nothing.") var dryRun = false
    @Option(help: ArgumentHelp("Longest wait for a member or NODE to catch up.", valueName: "seconds")) var timeout: Double = 600

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        return try Join(configPath: global.config, node: node, source: from, copySchema: copySchema, force: force, dryRun: dryRun,
                        timeout: timeout, context: context).run()
    }
}

/// Stops a join or part part-way, with what to tell the user.
struct Interrupted: Error {
    var message: String
}

struct Join {
    let configPath: String
    let node: String
    let source: String
    let copySchema: Bool
    let force: Bool
    let dryRun: Bool
    let timeout: Double
    let context: Context

    var console: Console { context.console }

    func run() throws -> ExitStatus {
        let config = try loadConfig(configPath, console: console)
        let names = config.names
        for name in [node, source] { try requireNode(name, in: config, path: configPath) }
        guard node != source else { throw CLIError(.usage, "\(node) cannot join from itself; --from names a member of the mesh") }
        var preflight = Preflight(config: config, console: console)
        if !preflight.unreachable.isEmpty {
            for facts in preflight.unreachable {
                console.error("mmlite: cannot connect to \(facts.name) (\(DSN.masked(config.node(named: facts.name)?.dsn ?? ""))): \(facts.connectionError ?? "")")
            }
            console.error("Nothing was changed. Every node must be reachable for join (`mmlite part NODE --force` removes a node that is gone).")
            return .unavailable
        }
        let observed = preflight.states
        let observedMembers = Membership.members(config: config, states: observed, joiningFrom: source)
        if observedMembers.contains(node) && !Membership.isRunning(config: config, states: observed) {
            throw CLIError(.failure, "mesh \"\(config.mesh.name)\" is not running yet (no node subscribes to another): build it with `mmlite apply` (leave \(node) out of the file until then), then join further nodes")
        }
        if !observedMembers.contains(source) {
            throw CLIError(.failure, "\(source) is not a member of mesh \"\(config.mesh.name)\" (members: \(observedMembers.joined(separator: ", "))); --from must name one")
        }
        // --copy-schema: tables missing on NODE are created from SOURCE first (the
        // checks and probes below need them: a probe subscription looks its tables up).
        let missingOnNode = copySchema ? preflight.tables.filter { table in preflight.facts.first { $0.name == node }?.tables[table] == nil } : []
        if !missingOnNode.isEmpty {
            if dryRun {
                console.print("-- 0. create \(missingOnNode.map(\.sql).joined(separator: ", ")) on \(node) from \(source)'s definitions:")
                console.print("-- \(schemaDumpCommand(tables: missingOnNode, dsn: DSN.masked(config.node(named: source)!.dsn)).joined(separator: " ")) | (run on \(node))")
            } else {
                do {
                    try createSchema(missingOnNode, config: config, sourceMajor: (preflight.states[source]?.major ?? 15), on: preflight.connections[node]!)
                } catch let error as Interrupted {
                    console.error("mmlite join: \(error.message)")
                    console.error("Nothing was changed.")
                    return .failure
                }
                preflight = Preflight(config: config, console: console)
            }
        }
        let states = preflight.states
        let members = Membership.members(config: config, states: states, joiningFrom: source)
        let alreadyMember = members.contains(node)
        let withNode = config.nodes.map(\.name).filter { members.contains($0) || $0 == node }
        let peers = members.filter { $0 != source && $0 != node }
        let tables = preflight.tables
        // Opted-in tables (docs/conflicts.md): the members publish their change
        // tables, and NODE needs the conflict objects plus each table's
        // versions (tombstones included), copied in the same snapshot as its rows.
        let conflicts = ConflictSetup(config: config, tables: tables, connections: preflight.connections)
        if !conflicts.problems.isEmpty {
            for problem in conflicts.problems { console.error("mmlite join: conflict handling: \(problem)") }
            console.error("Nothing was changed.")
            return .failure
        }
        let outdated = try conflicts.steps(nodes: members.filter { $0 != node })
        if !outdated.isEmpty {
            console.error("mmlite join: conflict handling on \(outdated.map(\.node).joined(separator: ", ")) differs from \(configPath); nothing was changed.")
            console.error("Run `mmlite apply` first (it leaves \(node) out), then join.")
            return .failure
        }
        let conflictSteps = try conflicts.steps(nodes: [node])
        let copied = tables + conflicts.described.map { ConflictSQL.versionTable($0.name) }
        let planner = Planner(config: config, tables: conflicts.publishedTables)
        func filter(_ publisher: String, _ subscriber: String) throws -> LinkFilter {
            try planner.filter(for: Link(publisher: publisher, subscriber: subscriber), states: states)
        }
        guard let nodeConnection = preflight.connections[node], let sourceConnection = preflight.connections[source] else {
            return .unavailable
        }

        // Checks: doctor's blocking checks, plugin and reachability of NODE's links.
        var request = ProbeRequest()
        for member in members where member != node {
            request.peers.insert(Link(publisher: member, subscriber: node))
            request.peers.insert(Link(publisher: node, subscriber: member))
            if try filter(member, node) == .mmlite { request.plugin.insert(member) }
            if try filter(node, member) == .mmlite { request.plugin.insert(node) }
        }
        // NODE's conflict objects first: the probe subscriptions look the
        // published change tables up on NODE (idempotent, harmless on a node
        // that is not a member yet).
        if !dryRun {
            for step in conflictSteps {
                console.debug("[\(step.node)] \(step.displaySQL)")
                do {
                    try nodeConnection.execute(step.sql)
                } catch let error as PGError {
                    console.error("mmlite join: installing conflict handling on \(node) failed: \(console.redact(error.description))")
                    console.error("Nothing was changed.")
                    return .failure
                }
                console.print("\(node): \(step.summary)")
            }
        }
        // What a refusal below leaves behind (the objects above are idempotent and inert until wired).
        let unchanged = dryRun || conflictSteps.isEmpty ? "nothing was changed"
            : "only the conflict-handling objects were installed on \(node) (a re-run keeps them)"
        preflight.probe(request)
        let failures = preflight.evaluate().filter { result in
            // Dry run with --copy-schema or conflict handling: the tables are not there yet.
            result.status == .failure && !(dryRun && result.node == node && (!missingOnNode.isEmpty || !conflictSteps.isEmpty)
                                           && (result.check == "table" || result.check == "peer") && result.message.contains("does not exist"))
        }
        if !failures.isEmpty {
            console.error("mmlite join: \(failures.count) check\(failures.count == 1 ? "" : "s") failed; \(unchanged).")
            var lines: [String] = []
            let buffer = Console(out: { lines.append($0) }, err: { lines.append($0) })
            buffer.addSecrets(config.secrets)
            printChecks(failures, config: config, console: buffer)
            console.error(lines.joined().trimmingCharacters(in: .newlines))
            return .failure
        }

        let sourceSlot = names.slot(subscriber: node)
        let marker = names.joinOrigin
        let copyMark = try nodeConnection.query(JoinSQL.originProgress(marker)).scalar.flatMap(LSN.init)
        let copyDone = alreadyMember || copyMark != nil
        let nonEmpty = copyDone ? [] : try tables.filter { !missingOnNode.contains($0) }.filter { table in
            try nodeConnection.query("SELECT EXISTS (SELECT 1 FROM \(table.sql))").scalar == "t"
        }
        if !nonEmpty.isEmpty && !force {
            console.error("mmlite join: \(node) already has rows in \(nonEmpty.map(\.sql).joined(separator: ", ")); \(unchanged).")
            console.error("join copies every table from \(source) into empty tables. Empty them, or pass --force to have join empty them first.")
            return .failure
        }

        let summary = "\(members.filter { $0 != node }.count) members, \(tables.count) table\(tables.count == 1 ? "" : "s")"
        if dryRun {
            for step in conflictSteps { console.print("-- 0. on \(node): \(step.summary)") }
            printPlan(config: config, members: members.filter { $0 != node }, withNode: withNode, peers: peers, tables: copied,
                      copyDone: copyDone, summary: summary, filter: filter, states: states, planner: planner)
            return .ok
        }

        console.print(copyDone
            ? "Resuming join of \(node) to mesh \"\(config.mesh.name)\" (\(summary)): the copy is done."
            : "Joining \(node) to mesh \"\(config.mesh.name)\" from \(source) (\(summary)):")
        var timings: [(String, Double)] = []
        var phase = 0
        func timed<T>(_ title: String, _ body: () throws -> T) throws -> T {
            phase += 1
            let started = Date()
            console.print("[\(phase)] \(title)")
            let result = try body()
            let seconds = Date().timeIntervalSince(started)
            timings.append((title, seconds))
            console.print(String(format: "    done in %.2f s", seconds))
            context.hooks.afterStep?(phase, Step(node: node, action: .installConflicts(sql: "", summary: title)))
            return result
        }

        var changed = false
        do {
            if !copyDone {
                var startPositions: [String: LSN] = [:]
                // Stale slot of an attempt whose copy did not commit: its snapshot is gone.
                if let stale = states[source]?.slots[sourceSlot] {
                    if stale.active { throw Interrupted(message: "\(source): slot \(sourceSlot) is in use; is another join running?") }
                    try sourceConnection.query(JoinSQL.dropSlot(sourceSlot))
                    console.print("    dropped \(source)'s slot \(sourceSlot) left by an interrupted join")
                }
                try timed("slots for \(node) on \(peers.isEmpty ? "no other member" : peers.joined(separator: ", ")) (before the copy)") {
                    for peer in peers {
                        let connection = preflight.connections[peer]!
                        let slot = names.slot(subscriber: node)
                        if let existing = try connection.query(JoinSQL.slotPosition(slot)).scalar.flatMap(LSN.init) {
                            startPositions[peer] = existing
                            console.print("    \(peer): slot \(slot) exists (from an earlier attempt) at \(existing)")
                        } else {
                            let lsn = try connection.query(JoinSQL.createSlot(slot, plugin: try filter(peer, node).slotPlugin)).scalar.flatMap(LSN.init)
                            guard let lsn else { throw Interrupted(message: "\(peer): slot \(slot) has no position") }
                            startPositions[peer] = lsn
                            changed = true
                            console.print("    \(peer): created slot \(slot) (plugin \(try filter(peer, node).slotPlugin)), consistent point C_\(peer) = \(lsn)")
                        }
                    }
                }
                try timed("wait until \(source) has applied every other member up to that point") {
                    for peer in peers {
                        let connection = preflight.connections[peer]!
                        let slot = names.slot(subscriber: source)
                        let target = startPositions[peer]!
                        try waitFor("\(source) applied \(peer) up to \(target)") {
                            let position = try connection.query(JoinSQL.slotPosition(slot)).scalar.flatMap(LSN.init)
                            guard let position else { throw Interrupted(message: "\(peer): slot \(slot) for \(source) is missing") }
                            return position >= target ? nil : "\(formatBytes(target.bytes(since: position))) to go"
                        }
                    }
                }
                var applied: [String: LSN] = [:]
                var paused: [String] = []
                var consistentPoint = LSN.zero
                var snapshot = ""
                var replication: PGConnection? = nil
                defer { replication?.close() }
                let pauseStarted = Date()
                do {
                    try timed("pause \(source)'s subscriptions from \(peers.isEmpty ? "no other member" : peers.joined(separator: ", ")); read how far it applied each; export a snapshot") {
                        for peer in peers {
                            let subscription = names.subscription(publisher: peer)
                            try sourceConnection.execute(JoinSQL.disableSubscription(subscription))
                            paused.append(subscription)
                            try waitFor("\(source)'s worker for \(subscription) to exit") {
                                try sourceConnection.query(JoinSQL.workerRunning(subscription)).scalar == "0" ? nil : "running"
                            }
                            let position = try sourceConnection.query(JoinSQL.appliedPosition(subscription)).scalar.flatMap(LSN.init) ?? .zero
                            applied[peer] = position
                            console.print("    \(source) applied \(peer) up to R_\(peer) = \(position)")
                        }
                        let sourceNode = config.node(named: source)!
                        let connection = try PGConnection(sourceNode.dsn, overrides: ["replication": "database", "application_name": "mmlite join"])
                        replication = connection
                        let command = JoinSQL.createSlotExportingSnapshot(slot: sourceSlot, plugin: try filter(source, node).slotPlugin,
                                                                          major: states[source]!.major)
                        console.debug("[\(source)] \(command)")
                        let result = try connection.execute(command)
                        changed = true
                        consistentPoint = result.value(0, "consistent_point").flatMap(LSN.init) ?? .zero
                        snapshot = result.value(0, "snapshot_name") ?? ""
                        console.print("    \(source): created slot \(sourceSlot), consistent point \(consistentPoint), snapshot \(snapshot)")
                    }
                } catch {
                    for subscription in paused { _ = try? sourceConnection.execute(JoinSQL.enableSubscription(subscription)) }
                    throw error
                }
                for subscription in paused { try sourceConnection.execute(JoinSQL.enableSubscription(subscription)) }
                console.print(String(format: "    %@'s subscriptions resumed; paused for %.2f s", source, Date().timeIntervalSince(pauseStarted)))

                try timed("start each member's slot for \(node) where the copy ends") {
                    for peer in peers {
                        let slot = names.slot(subscriber: node)
                        let at = startPositions[peer]!, target = applied[peer]!
                        if JoinSQL.needsAdvance(slotAt: at, applied: target) {
                            try preflight.connections[peer]!.query(JoinSQL.advanceSlot(slot, to: target.description))
                            console.print("    \(peer): advanced \(slot) from \(at) to \(target) (changes up to there are in the copy)")
                        } else {
                            console.print("    \(peer): \(slot) stays at \(at) (\(source) had applied \(peer) up to \(target))")
                        }
                    }
                }
                try timed("copy \(tables.count) table\(tables.count == 1 ? "" : "s") from \(source) into \(node) in that snapshot") {
                    try copyTables(copied, snapshot: snapshot, consistentPoint: consistentPoint, config: config,
                                   emptied: nonEmpty, versionTables: Array(copied.dropFirst(tables.count)))
                }
                replication?.close()
                replication = nil
            }

            // Wire NODE in both ways (NODE's subscriptions start on the slots above).
            let wiring = try planner.plan(states: try refreshedStates(preflight: preflight), members: withNode)
            for member in members where member != node {
                guard try preflight.connections[member]!.query(JoinSQL.slotPosition(names.slot(subscriber: node))).scalar != nil else {
                    throw Interrupted(message: "\(member): slot \(names.slot(subscriber: node)) is missing after the copy, so \(node) cannot start at the right place; run `mmlite part \(node)`, empty its tables and join again")
                }
            }
            if !wiring.steps.isEmpty {
                try timed("subscriptions of \(node) on those slots (no copy), its publication, its slots and the members' subscriptions from it") {
                    for step in wiring.steps {
                        console.debug("[\(step.node)] \(step.displaySQL)")
                        try preflight.connections[step.node]!.execute(step.sql)
                        changed = true
                        console.print("    \(step.node): \(step.summary)")
                    }
                }
            }
            try timed("wait until \(node) has caught up with every member") {
                for member in members where member != node {
                    let connection = preflight.connections[member]!
                    let target = try connection.query("SELECT pg_current_wal_lsn()::text").scalar.flatMap(LSN.init) ?? .zero
                    let slot = names.slot(subscriber: node)
                    try waitFor("\(node) applied \(member) up to \(target)") {
                        let position = try connection.query(JoinSQL.slotPosition(slot)).scalar.flatMap(LSN.init) ?? .zero
                        return position >= target ? nil : "\(formatBytes(target.bytes(since: position))) behind"
                    }
                }
            }
            try nodeConnection.query(JoinSQL.dropOrigin(marker))
        } catch let error as Interrupted {
            return stopped(error.message, changed: changed)
        } catch let error as PGError {
            return stopped(console.redact(error.description), changed: changed)
        }
        console.print("")
        console.print("Done: \(node) joined mesh \"\(config.mesh.name)\". Phase times: " + timings.enumerated().map { String(format: "%d) %.2f s", $0.offset + 1, $0.element.1) }.joined(separator: ", "))
        console.print("Check it with `mmlite status`.")
        return .ok
    }

    func stopped(_ message: String, changed: Bool) -> ExitStatus {
        console.error("mmlite join: \(message)")
        if !changed {
            console.error("Nothing was changed.")
            return .warning
        }
        console.error("join stopped part-way. Fix the cause, then run `mmlite join \(node) --from \(source)` again: it continues from what exists (an unfinished copy is redone).")
        return .partial
    }

    /// The states again (objects changed since the preflight).
    func refreshedStates(preflight: Preflight) throws -> [String: NodeState] {
        var states: [String: NodeState] = [:]
        for facts in preflight.facts {
            guard let connection = preflight.connections[facts.name] else { continue }
            states[facts.name] = try preflight.inspector.state(of: facts, connection, tables: preflight.tables)
        }
        return states
    }

    /// Polls `check` (nil = done, else what is left) until done or the timeout; prints progress every few seconds.
    func waitFor(_ what: String, _ check: () throws -> String?) throws {
        let started = Date()
        var lastPrint = Date()
        while true {
            guard let left = try check() else { return }
            if Date().timeIntervalSince(started) > timeout {
                throw Interrupted(message: "timed out after \(Int(timeout)) s waiting for \(what) (\(left))")
            }
            if Date().timeIntervalSince(lastPrint) >= 5 {
                console.print(String(format: "    waiting for %@: %@ (%.0f s)", what, left, Date().timeIntervalSince(started)))
                lastPrint = Date()
            }
            usleep(50_000)
        }
    }

    /// Copies every table in `snapshot` in one transaction on NODE, tagged with
    /// the join origin, whose progress is set to `consistentPoint` by the commit.
    /// `emptied`: tables with rows (--force); `versionTables` are always
    /// emptied (conflict handling may have written them before the copy).
    func copyTables(_ tables: [QualifiedName], snapshot: String, consistentPoint: LSN, config: MeshConfig,
                    emptied nonEmpty: [QualifiedName], versionTables: [QualifiedName]) throws {
        let marker = config.names.joinOrigin
        let reader = try Connections.connect(config.node(named: source)!.dsn)
        defer { reader.close() }
        let writer = try Connections.connect(config.node(named: node)!.dsn)
        defer { writer.close() }
        try reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try reader.execute("SET TRANSACTION SNAPSHOT \(SQL.literal(snapshot))")
        try writer.query(JoinSQL.createOrigin(marker))
        for statement in JoinSQL.copySessionSetup(origin: marker) { try writer.execute(statement) }
        if !nonEmpty.isEmpty || !versionTables.isEmpty {
            try writer.execute("TRUNCATE \((nonEmpty + versionTables).map(\.sql).joined(separator: ", "))")
        }
        if !nonEmpty.isEmpty {
            console.print("    emptied \(nonEmpty.map(\.sql).joined(separator: ", ")) on \(node) (--force)")
        }
        var totalRows = 0, totalBytes = 0
        for table in tables {
            let columns = try reader.query("""
                SELECT a.attname FROM pg_attribute a
                WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                ORDER BY a.attnum
                """, [table.sql]).rows.compactMap { $0[0] }
            let expected = UInt64(try reader.query("SELECT pg_table_size($1::regclass)", [table.sql]).scalar.flatMap { Int64($0) } ?? 0)
            let started = Date()
            var lastPrint = Date()
            var copied = 0
            let rows = try reader.copy(JoinSQL.copyOut(table, columns: columns), to: writer, JoinSQL.copyIn(table, columns: columns)) { bytes in
                copied = bytes
                if Date().timeIntervalSince(lastPrint) >= 1 {
                    lastPrint = Date()
                    let progress = CopyProgress(bytes: UInt64(bytes), expectedBytes: expected, seconds: Date().timeIntervalSince(started))
                    console.print("    \(table.sql): \(progress.line)")
                }
            }
            let seconds = Date().timeIntervalSince(started)
            totalRows += rows
            totalBytes += copied
            console.print(String(format: "    %@: %d rows, %@ in %.2f s (%@/s)", table.sql, rows, formatBytes(UInt64(copied)), seconds,
                                 formatBytes(UInt64(seconds > 0 ? Double(copied) / seconds : 0))))
        }
        for statement in JoinSQL.copyCommit(lsn: consistentPoint.description) { try writer.execute(statement) }
        try reader.execute("COMMIT")
        console.print("    copied \(totalRows) rows, \(formatBytes(UInt64(totalBytes))); the copy is committed on \(node) with origin \(marker) at \(consistentPoint)")
    }

    func schemaDumpCommand(tables: [QualifiedName], dsn: String, binary: String = "pg_dump") -> [String] {
        [binary, "--schema-only", "--no-owner", "--no-privileges", "--no-publications", "--no-subscriptions"]
            + tables.map { "--table=" + $0.sql } + ["--dbname=" + dsn]
    }

    /// Runs pg_dump --schema-only (a version >= SOURCE's) for `tables` and executes its output on NODE.
    func createSchema(_ tables: [QualifiedName], config: MeshConfig, sourceMajor: Int, on connection: PGConnection) throws {
        var candidates = (sourceMajor...30).reversed().map { "/usr/lib/postgresql/\($0)/bin/pg_dump" }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") { candidates.append("\(directory)/pg_dump") }
        let dsn = config.node(named: source)!.dsn
        var lastProblem = "no pg_dump found (install the PostgreSQL \(sourceMajor) client, or create the tables on \(node) yourself)"
        for binary in candidates where FileManager.default.isExecutableFile(atPath: binary) {
            let (status, output, errors) = runTool(schemaDumpCommand(tables: tables, dsn: dsn, binary: binary))
            if status != 0 {
                lastProblem = "\(binary) failed: \(console.redact(errors.trimmingCharacters(in: .whitespacesAndNewlines)))"
                if errors.contains("server version mismatch") { continue }
                break
            }
            // Recent pg_dump versions wrap the script in psql meta-commands (\restrict ...): not SQL.
            let script = output.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("\\") }.joined(separator: "\n")
            do {
                try connection.execute(script)
            } catch let error as PGError {
                throw Interrupted(message: "creating the tables on \(node) failed: \(console.redact(error.description))")
            }
            console.print("Created \(tables.map(\.sql).joined(separator: ", ")) on \(node) from \(source)'s definitions (\(binary) --schema-only).")
            return
        }
        throw Interrupted(message: lastProblem)
    }

    func runTool(_ arguments: [String]) -> (Int32, String, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { return (127, "", "\(error)") }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    func printPlan(config: MeshConfig, members: [String], withNode: [String], peers: [String], tables: [QualifiedName], copyDone: Bool,
                   summary: String, filter: (String, String) throws -> LinkFilter, states: [String: NodeState], planner: Planner) {
        let names = config.names
        let slot = names.slot(subscriber: node)
        console.print("Plan to join \(node) to mesh \"\(config.mesh.name)\" from \(source) (\(summary)). Dry run: nothing is changed.")
        func block(_ title: String, _ statements: [(String, String)]) {
            console.print()
            console.print("-- \(title)")
            for (where_, sql) in statements { console.print("-- on \(where_):\n\(sql);") }
        }
        if copyDone {
            console.print("The copy is already done; the join continues with the wiring.")
        } else {
            block("1. create each other member's slot for \(node), before the copy; its consistent point is C_P",
                  peers.map { ($0, JoinSQL.createSlot(slot, plugin: (try? filter($0, node).slotPlugin) ?? "mmlite")) })
            block("2. wait until \(source) has applied each member P up to C_P (repeat until confirmed_flush_lsn >= C_P)",
                  peers.map { ($0, JoinSQL.slotPosition(names.slot(subscriber: source))) })
            var pause: [(String, String)] = []
            for peer in peers {
                let subscription = names.subscription(publisher: peer)
                pause += [(source, JoinSQL.disableSubscription(subscription)), (source, JoinSQL.workerRunning(subscription) + " -- until 0"),
                          (source, JoinSQL.appliedPosition(subscription) + " -- R_\(peer)")]
            }
            pause.append(("\(source), replication connection kept open until the copy ends",
                          JoinSQL.createSlotExportingSnapshot(slot: slot, plugin: (try? filter(source, node).slotPlugin) ?? "mmlite", major: states[source]?.major ?? 15)))
            pause += peers.map { (source, JoinSQL.enableSubscription(names.subscription(publisher: $0))) }
            block("3. pause \(source)'s subscriptions from the other members, read R_P, export a snapshot, resume", pause)
            block("4. start each member's slot for \(node) at R_P where R_P is ahead of C_P",
                  peers.map { ($0, JoinSQL.advanceSlot(slot, to: "R_\($0)")) })
            var copy: [(String, String)] = [(source, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"), (source, "SET TRANSACTION SNAPSHOT 'SNAPSHOT'")]
            copy.append((node, JoinSQL.createOrigin(names.joinOrigin)))
            copy += JoinSQL.copySessionSetup(origin: names.joinOrigin).map { (node, $0) }
            for table in tables {
                copy.append(("\(source) -> \(node)", JoinSQL.copyOut(table, columns: []) + " | " + JoinSQL.copyIn(table, columns: [])))
            }
            copy += JoinSQL.copyCommit(lsn: "CONSISTENT_POINT").map { (node, $0) }
            block("5. copy every table in the snapshot, one transaction on \(node)", copy)
        }
        var simulated = states
        if !copyDone { for member in members { simulated[member]?.slots[slot] = SlotState(plugin: (try? filter(member, node).slotPlugin) ?? "mmlite") } }
        if let wiring = try? planner.plan(states: simulated, members: withNode) {
            block("6. wire \(node) in (subscriptions without copy on the slots above; its publication and slots; the members' subscriptions from it)",
                  wiring.steps.map { ($0.node, $0.displaySQL) })
        }
        block("7. wait until every member's slot for \(node) has confirmed the member's current WAL position; then drop the copy origin",
              members.map { ($0, JoinSQL.slotPosition(slot)) } + [(node, JoinSQL.dropOrigin(names.joinOrigin))])
    }
}
