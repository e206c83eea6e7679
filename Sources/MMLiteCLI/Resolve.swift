import Foundation
import MMLiteCore
import PostgresClient

/// A mesh subscription as `resolve` and `status` need it.
struct SubscriptionInfo {
    var name: String
    var oid: String
    var enabled: Bool
    /// `suborigin` (16+): "none" means the publisher filters by origin itself.
    var origin: String?
    var slot: String
    var skipLSN: LSN?
    var workerRunning: Bool
    var applyErrors: Int64
    /// How far the subscriber has applied (the origin's remote_lsn).
    var appliedUpTo: LSN?

    static func read(_ connection: PGConnection, name: String) throws -> SubscriptionInfo? {
        let catalog = Catalog(connection)
        guard let state = try catalog.subscriptions(Catalog.SubscriptionColumns(progress: true), named: name)[name],
              let oid = state.oid else { return nil }
        return SubscriptionInfo(name: name, oid: oid, enabled: state.enabled, origin: state.origin, slot: state.slotName ?? "",
                                skipLSN: state.skipLSN, workerRunning: state.workers > 0, applyErrors: state.applyErrors ?? 0,
                                appliedUpTo: state.appliedUpTo)
    }
}

/// Reads a slot's pending changes without consuming them.
enum SlotPeek {
    struct Busy: Error {}

    /// The first transaction on `slot` the subscriber has not applied
    /// (committed after `appliedUpTo`); nil when nothing is pending. Throws
    /// `Busy` when a walsender holds the slot.
    static func firstPending(_ publisher: PGConnection, slot: String, publication: String, originNone: Bool,
                             appliedUpTo: LSN?, console: Console) throws -> PgOutput.Transaction? {
        var limit = 1000
        while true {
            // Without streaming (protocol 1) a transaction is emitted whole at
            // its commit, so a row limit never cuts one; a bigger limit is
            // needed only while everything seen was applied already.
            var options = "'proto_version', '1', 'publication_names', \(SQL.literal(publication))"
            if originNone { options += ", 'origin', 'none'" }
            let result: PGResult
            do {
                result = try publisher.query("SELECT data::text AS data FROM pg_catalog.pg_logical_slot_peek_binary_changes($1, NULL, $2::int, \(options))",
                                             [slot, String(limit)])
            } catch let error as PGError where SQLState(error.sqlState) == .objectInUse {
                throw Busy()
            }
            let messages = try result.named.map { try PgOutput.bytes(fromHex: $0["data"] ?? "") }
            let (complete, open) = try PgOutput.transactions(messages)
            if let pending = PgOutput.firstPending(complete, appliedUpTo: appliedUpTo) { return pending }
            if result.rows.count < limit {
                // An open transaction at the end: the slot ran out mid-way (cannot happen with protocol 1).
                return open.flatMap { PgOutput.firstPending([$0], appliedUpTo: appliedUpTo) == nil ? nil : $0 }
            }
            guard limit < 100_000_000 else { return nil }
            console.debug("peek: \(limit) messages held only applied transactions; looking further")
            limit *= 10
        }
    }
}

struct Resolve {
    let configPath: String
    let node: String
    let from: String?
    let dryRun: Bool
    /// How long to watch for a new apply error, and to wait for workers.
    let timeout: Double
    let context: Context

    struct Candidate {
        var peer: String
        var info: SubscriptionInfo
    }

    func run() throws -> ExitStatus {
        let console = context.console
        let config = try loadConfig(configPath, console: console)
        try requireNode(node, in: config, path: configPath)
        if let from {
            try requireNode(from, in: config, path: configPath)
            guard from != node else { throw CLIError(.usage, "--from \(from): name the peer whose link into \(node) is stuck, not \(node) itself") }
        }
        guard let subscriber = try? Connections.connect(config.node(named: node)!.dsn) else {
            throw CLIError(.unavailable, "\(node) is unreachable")
        }
        defer { subscriber.close() }
        let capabilities = subscriber.capabilities
        guard capabilities.subscriptionSkip else {
            throw CLIError(.config, """
                \(node) runs PostgreSQL \(capabilities.major): ALTER SUBSCRIPTION ... SKIP needs 15 or later. Instead, on \(node): \
                find the failing transaction's "finished at" LSN in the server log, then ALTER SUBSCRIPTION <name> DISABLE; \
                SELECT pg_replication_origin_advance('pg_' || <subscription oid>, '<that LSN>'); ALTER SUBSCRIPTION <name> ENABLE \
                (this skips the transaction without a record), or remove the row the transaction conflicts with on \(node)
                """)
        }
        let stuck = try stuckCandidates(try candidates(subscriber, config: config), subscriber: subscriber)
        guard !stuck.isEmpty else {
            let what = from.map { "the link \($0) -> \(node)" } ?? "no link into \(node)"
            console.print(from == nil ? "Nothing to resolve: \(what) keeps failing." : "Nothing to resolve: \(what) is not failing (no new apply error within \(Int(timeout)) s).")
            return from == nil ? .ok : .failure
        }
        var result = ExitStatus.ok
        for candidate in stuck {
            let status = try resolve(candidate, subscriber: subscriber, config: config)
            if status != .ok { result = status }
        }
        return result
    }

    /// The subscriptions into `node` to consider: from `--from`, else from every peer.
    private func candidates(_ subscriber: PGConnection, config: MeshConfig) throws -> [Candidate] {
        let names = config.names
        var candidates: [Candidate] = []
        for peer in from.map({ [$0] }) ?? config.nodes.map(\.name).filter({ $0 != node }) {
            guard let info = try SubscriptionInfo.read(subscriber, name: names.subscription(publisher: peer)) else {
                if from != nil { throw CLIError(.failure, "\(node) has no subscription \(names.subscription(publisher: peer)) (run mmlite apply)") }
                continue
            }
            candidates.append(Candidate(peer: peer, info: info))
        }
        return candidates
    }

    /// Only a link that keeps failing is skipped: a link that is merely
    /// behind must not lose a transaction.
    private func stuckCandidates(_ candidates: [Candidate], subscriber: PGConnection) throws -> [Candidate] {
        let console = context.console
        var stuck: [Candidate] = []
        let failing = candidates.filter { $0.info.applyErrors > 0 }
        if !failing.isEmpty {
            console.print("Watching \(failing.map { $0.info.name }.joined(separator: ", ")) on \(node) for a new apply error (up to \(Int(timeout)) s)...")
        }
        for candidate in failing {
            if !candidate.info.enabled {
                // Disabled (disable_on_error, an interrupted resolve, or by hand): it cannot
                // fail again to prove it is stuck, so only an explicit --from skips it.
                if from != nil {
                    stuck.append(candidate)
                } else {
                    console.print("\(candidate.info.name) is disabled (with \(candidate.info.applyErrors) apply errors so far): not touched; name it with --from \(candidate.peer) to skip its next transaction")
                }
                continue
            }
            var failedAgain = false
            _ = pollUntil(timeout: timeout, interval: 0.5) {
                guard let now = try SubscriptionInfo.read(subscriber, name: candidate.info.name) else { return true }
                failedAgain = now.applyErrors > candidate.info.applyErrors
                let advanced = (now.appliedUpTo ?? .zero) > (candidate.info.appliedUpTo ?? .zero)
                return failedAgain || advanced
            }
            if failedAgain { stuck.append(candidate) }
        }
        return stuck
    }

    /// One link being resolved: its connections and names.
    private struct Target {
        var candidate: Candidate
        var subscriber: PGConnection
        var publisher: PGConnection
        var slot: String
        var publication: String
        var subscription: String { candidate.info.name }
        var originNone: Bool { candidate.info.origin == "none" }

        /// The first transaction the subscriber has not applied.
        func firstPending(console: Console) throws -> PgOutput.Transaction? {
            let info = try SubscriptionInfo.read(subscriber, name: subscription)
            return try SlotPeek.firstPending(publisher, slot: slot, publication: publication,
                                             originNone: originNone, appliedUpTo: info?.appliedUpTo, console: console)
        }
    }

    /// Skips the failing transaction of one subscription: runs a `SkipProcedure`.
    private func resolve(_ candidate: Candidate, subscriber: PGConnection, config: MeshConfig) throws -> ExitStatus {
        let console = context.console
        guard let publisherNode = config.node(named: candidate.peer) else { return .failure }
        let publisher: PGConnection
        do { publisher = try Connections.connect(publisherNode.dsn) } catch {
            console.error("mmlite: \(candidate.peer) -> \(node): publisher \(candidate.peer) is unreachable: \(console.message(of: error))")
            return .unavailable
        }
        defer { publisher.close() }
        let target = Target(candidate: candidate, subscriber: subscriber, publisher: publisher,
                            slot: candidate.info.slot.isEmpty ? config.names.slot(subscriber: node) : candidate.info.slot,
                            publication: config.names.publication)
        var procedure = SkipProcedure(SkipProcedure.Request(node: node, peer: candidate.peer, subscription: target.subscription,
                                                            slot: target.slot, dryRun: dryRun, timeout: timeout))
        var action = procedure.start()
        while true {
            if case .finish(let outcome) = action {
                switch outcome {
                case .done: return .ok
                case .failed: return .failure
                case .incomplete: return .partial
                }
            }
            action = procedure.next(perform(action, target))
        }
    }

    private func perform(_ action: SkipProcedure.Action, _ target: Target) -> SkipProcedure.Event {
        let console = context.console
        let subscription = SQL.identifier(target.subscription)
        do {
            switch action {
            case .disable: try target.subscriber.execute("ALTER SUBSCRIPTION \(subscription) DISABLE")
            case .enable: try target.subscriber.execute("ALTER SUBSCRIPTION \(subscription) ENABLE")
            case .waitStopped: return .stopped(stopped(target))
            case .peek: return peek(target)
            case .recordAndSkip(let transaction):
                do { try recordAndSkip(transaction, target) } catch {
                    _ = try? target.subscriber.execute("ROLLBACK")
                    throw error
                }
            case .waitPast(let lsn): return waitPast(lsn, target)
            case .say(let line): console.print(line)
            case .warn(let line): console.error(line)
            case .finish: break
            }
        } catch {
            return .failed(console.message(of: error))
        }
        return .done
    }

    /// The first pending transaction; a dry run retries while the failing worker holds the slot.
    private func peek(_ target: Target) -> SkipProcedure.Event {
        let console = context.console
        var result: SkipProcedure.Event = .busy
        _ = pollUntil(timeout: dryRun ? timeout : 0, interval: 0.3) {
            do {
                result = .pending(try target.firstPending(console: console))
            } catch is SlotPeek.Busy {
                return false
            } catch {
                result = .failed(console.message(of: error))
            }
            return true
        }
        return result
    }

    /// Whether the subscription's workers and the walsender stopped within the timeout.
    private func stopped(_ target: Target) -> Bool {
        pollUntil(timeout: timeout, interval: 0.2) {
            let workers = try SubscriptionInfo.read(target.subscriber, name: target.subscription)?.workerRunning ?? false
            let active = try Catalog(target.publisher).slots(named: target.slot)[target.slot]?.active ?? false
            return !workers && !active
        }
    }

    /// Records the transaction's changes in mmlite.conflicts and sets the skip, in one transaction.
    private func recordAndSkip(_ pending: PgOutput.Transaction, _ target: Target) throws {
        let subscriber = target.subscriber
        let peer = target.candidate.peer
        try subscriber.execute(ConflictSQL.shared)
        try subscriber.execute("BEGIN")
        let version = "{\"lsn\": \"\(pending.finalLSN)\", \"xid\": \(pending.xid), \"node\": \(jsonQuoted(peer)), \"committed_at\": \"\(PgOutput.time(pending.commitTime))\"}"
        if pending.changes.isEmpty {
            try subscriber.query(ConflictMaintenance.recordSkip, ["", "{}", nil, version, peer])
        }
        for change in pending.changes {
            try subscriber.query(ConflictMaintenance.recordSkip,
                                 [change.relation.qualifiedName, change.keyJSON,
                                  change.operation == .delete || change.operation == .truncate ? nil : change.rowJSON,
                                  version, peer])
        }
        try subscriber.execute("ALTER SUBSCRIPTION \(SQL.identifier(target.subscription)) SKIP (lsn = \(SQL.literal(pending.finalLSN.description)))")
        try subscriber.execute("COMMIT")
    }

    /// Waits until the worker runs past the skipped transaction.
    private func waitPast(_ lsn: LSN, _ target: Target) -> SkipProcedure.Event {
        var info: SubscriptionInfo?
        let past = pollUntil(timeout: max(timeout, 30), interval: 0.3) {
            info = try SubscriptionInfo.read(target.subscriber, name: target.subscription)
            guard let info else { return false }
            return info.skipLSN == nil && (info.appliedUpTo ?? .zero) >= lsn && info.workerRunning
        }
        return .past(reached: past, appliedUpTo: info?.appliedUpTo, workerRunning: info?.workerRunning == true)
    }
}

/// Polls `condition` until it holds or `timeout` seconds passed; errors count as false.
func pollUntil(timeout: Double, interval: Double, _ condition: () throws -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if (try? condition()) == true { return true }
        if Date() >= deadline { return false }
        usleep(UInt32(interval * 1_000_000))
    }
}
