import ArgumentParser
import Foundation
import MMLiteCore
import PostgresClient

struct PartCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "part",
        abstract: "Remove a node from the mesh: its subscriptions, slots and publication everywhere.",
        discussion: """
        If NODE is reachable, first takes the tables out of NODE's publication (what NODE
        commits from then on stays on NODE; finish a started part by running it again), waits
        until every other node has applied all of NODE's changes up to there (bounded by
        --timeout), so they all end with the same data, then drops the members' subscriptions from NODE and
        their slots for it, and NODE's own subscriptions, slots and publication. If NODE is
        down, --force drops the other nodes' slots for it (which would otherwise retain WAL
        until their disks fill) and their subscriptions from it, and says up to where each
        node had applied NODE's changes. Afterwards remove NODE from the configuration file.
        Exit code: 0 done, 2 refused, 69 a node is unreachable (without --force for NODE),
        75 stopped part-way (re-run to finish), 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The node to remove.") var node: String
    @Flag(help: "Do not wait for NODE's changes to reach the others; needed when NODE is down.") var force = false
    @Option(help: ArgumentHelp("Longest wait for the others to apply NODE's changes.", valueName: "seconds")) var timeout: Double = 300

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        return try Part(configPath: global.config, node: node, force: force, timeout: timeout, context: context).run()
    }
}

struct Part {
    let configPath: String
    let node: String
    let force: Bool
    let timeout: Double
    let context: Context

    var console: Console { context.console }

    func run() throws -> ExitStatus {
        let config = try loadConfig(configPath, console: console)
        let names = config.names
        try requireNode(node, in: config, path: configPath, hint: "; keep it in the file until it is parted")
        let connections = Connections(config: config, console: console)
        let others = config.nodes.map(\.name).filter { $0 != node }
        let unreachableOthers = others.filter { connections[$0] == nil }
        if !unreachableOthers.isEmpty {
            for name in unreachableOthers { console.error("mmlite: cannot connect to \(name): \(connections.errors[name] ?? "")") }
            console.error("Nothing was changed. Every other node must be reachable to remove \(node)'s objects from it; part them first (`mmlite part NODE --force`) if they are gone.")
            return .unavailable
        }
        let target = connections[node]
        if target == nil && !force {
            console.error("mmlite part: cannot connect to \(node): \(connections.errors[node] ?? "")")
            console.error("Nothing was changed. If \(node) is gone for good, `mmlite part \(node) --force` drops the other nodes' slots and subscriptions for it; changes it committed that did not reach them are then lost.")
            return .unavailable
        }
        let subscription = names.subscription(publisher: node)
        let slotForNode = names.slot(subscriber: node)
        var changed = false
        do {
            // 1. Every other node applies what NODE committed so far.
            if let target, !force {
                try cut(target, publication: names.publication)
                changed = true
                let end = try target.query("SELECT pg_current_wal_lsn()::text").scalar.flatMap(LSN.init) ?? .zero
                console.print("Waiting until every node has applied \(node)'s changes up to \(end):")
                for other in others {
                    let slot = names.slot(subscriber: other)
                    guard try connections[other]!.query("SELECT 1 FROM pg_subscription WHERE subname = $1", [subscription]).scalar != nil,
                          try target.query(JoinSQL.slotPosition(slot)).scalar != nil else {
                        console.print("  \(other): does not subscribe to \(node)")
                        continue
                    }
                    let started = Date()
                    var lastPrint = Date()
                    while true {
                        let position = try target.query(JoinSQL.slotPosition(slot)).scalar.flatMap(LSN.init) ?? .zero
                        if position >= end { break }
                        if Date().timeIntervalSince(started) > timeout {
                            throw Interrupted(message: "\(other) has not applied \(node)'s changes up to \(end) after \(Int(timeout)) s (at \(position)); nothing was dropped. Look at `mmlite status`, or use --force to drop anyway")
                        }
                        if Date().timeIntervalSince(lastPrint) >= 5 {
                            console.print("  \(other): \(formatBytes(end.bytes(since: position))) to go")
                            lastPrint = Date()
                        }
                        usleep(50_000)
                    }
                    console.print(String(format: "  %@: done (%.2f s)", other, Date().timeIntervalSince(started)))
                }
            }

            // 2. The others stop reading from NODE; note how far they got.
            var reached: [(String, LSN?)] = []
            for other in others {
                let connection = connections[other]!
                guard try connection.query("SELECT 1 FROM pg_subscription WHERE subname = $1", [subscription]).scalar != nil else { continue }
                try connection.execute(JoinSQL.disableSubscription(subscription))
                try waitInactive(what: "\(other)'s worker for \(subscription) to exit") {
                    try connection.query(JoinSQL.workerRunning(subscription)).scalar == "0"
                }
                reached.append((other, try connection.query(JoinSQL.appliedPosition(subscription)).scalar.flatMap(LSN.init)))
                for statement in JoinSQL.dropSubscription(subscription).dropFirst() { try connection.execute(statement) }
                changed = true
                console.print("\(other): dropped subscription \(subscription)")
            }

            // 3. NODE's own objects.
            if let target {
                let own = try target.query("SELECT subname FROM pg_subscription WHERE left(subname::text, length($1)) = $1 ORDER BY 1",
                                           [names.prefix + "from_"]).rows.compactMap { $0[0] }
                for name in own {
                    for statement in JoinSQL.dropSubscription(name) { try target.execute(statement) }
                    changed = true
                    console.print("\(node): dropped subscription \(name)")
                }
                let slots = try target.query("SELECT slot_name FROM pg_replication_slots WHERE left(slot_name::text, length($1)) = $1 ORDER BY 1",
                                             [names.prefix]).rows.compactMap { $0[0] }
                for slot in slots {
                    try dropSlot(slot, on: target, at: node)
                    changed = true
                }
                if try target.query("SELECT 1 FROM pg_publication WHERE pubname = $1", [names.publication]).scalar != nil {
                    try target.execute("DROP PUBLICATION \(SQL.identifier(names.publication))")
                    changed = true
                    console.print("\(node): dropped publication \(names.publication)")
                }
                try target.query(JoinSQL.dropOrigin(names.joinOrigin))
            }

            // 4. The others' slots for NODE.
            for other in others {
                let connection = connections[other]!
                if try connection.query(JoinSQL.slotPosition(slotForNode)).scalar != nil
                    || connection.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", [slotForNode]).scalar != nil {
                    try dropSlot(slotForNode, on: connection, at: other)
                    changed = true
                }
            }

            console.print("")
            if force {
                if reached.isEmpty {
                    console.print("No node subscribed to \(node).")
                } else {
                    console.print("How far each node had applied \(node)'s changes when it stopped reading them:")
                    for (other, lsn) in reached { console.print("  \(other): up to \(node)'s WAL position \(lsn?.description ?? "nothing applied")") }
                    let lowest = reached.compactMap(\.1).min()
                    console.print("Changes \(node) committed after \(lowest?.description ?? "0/0") may never have left it, or reached only some nodes (which then differ in those rows).")
                    if target == nil { console.print("If \(node)'s data directory still exists, compare those rows by hand before reusing it.") }
                }
            }
            console.print("Done: \(node) is no longer part of mesh \"\(config.mesh.name)\". Remove it from \(configPath) (apply otherwise reports it as not joined; `mmlite join` adds it again).")
            return .ok
        } catch let error as Interrupted {
            return stopped(error.message, changed: changed)
        } catch let error as PGError {
            return stopped(console.redact(error.description), changed: changed)
        }
    }

    /// Makes every other node end with the same set of NODE's transactions:
    /// takes the tables out of NODE's publication (logical decoding publishes
    /// a transaction whose first change comes after that commit to nobody),
    /// then waits until the transactions already running then have ended.
    /// Every walsender decodes the same WAL the same way, so once each peer
    /// has confirmed the WAL position after that, they all hold exactly
    /// NODE's transactions up to the cut. (Without it each peer would stop at
    /// a different point of NODE's ongoing writes and the rest would differ.)
    func cut(_ target: PGConnection, publication: String) throws {
        let tables = try target.query("""
            SELECT pg_catalog.format('%I.%I', schemaname, tablename) FROM pg_catalog.pg_publication_tables
            WHERE pubname = $1 AND NOT (SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = $1)
            ORDER BY 1
            """, [publication]).rows.compactMap { $0[0] }
        if !tables.isEmpty {
            try target.execute("ALTER PUBLICATION \(SQL.identifier(publication)) DROP TABLE \(tables.joined(separator: ", "))")
            console.print("\(node): took the tables out of publication \(publication): what \(node) commits from now on stays on \(node)")
        }
        guard let horizon = try target.query("SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text").scalar else { return }
        try waitInactive(what: "\(node)'s transactions that were running at the cut to end (a prepared transaction keeps them open)") {
            try target.query("SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) >= $1::xid8", [horizon]).scalar == "t"
        }
    }

    func stopped(_ message: String, changed: Bool) -> ExitStatus {
        console.error("mmlite part: \(message)")
        if !changed { return .warning }
        console.error("part stopped part-way. Fix the cause, then run `mmlite part \(node)\(force ? " --force" : "")` again: it continues from what exists.")
        return .partial
    }

    /// Drops a slot once no walsender uses it (the subscriber side was just dropped or is down).
    func dropSlot(_ slot: String, on connection: PGConnection, at name: String) throws {
        try waitInactive(what: "slot \(slot) on \(name) to become inactive") {
            try connection.query("SELECT active FROM pg_replication_slots WHERE slot_name = $1", [slot]).scalar != "t"
        }
        try connection.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", [slot])
        console.print("\(name): dropped slot \(slot)")
    }

    func waitInactive(what: String, _ done: () throws -> Bool) throws {
        let started = Date()
        while try !done() {
            if Date().timeIntervalSince(started) > 60 { throw Interrupted(message: "timed out waiting for \(what)") }
            usleep(50_000)
        }
    }
}
