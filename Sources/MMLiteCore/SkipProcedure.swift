import Foundation

/// `mmlite resolve NODE --skip` for one stuck link (publisher PEER → NODE), as
/// a state machine (see `JoinProcedure` for how runner and machine talk):
/// disable the subscription so its worker and the publisher's walsender stop
/// → read the first transaction NODE has not applied (the failing one) from
/// the slot without consuming it → record each of its changes in NODE's
/// mmlite.conflicts and set `ALTER SUBSCRIPTION ... SKIP` in one transaction
/// → enable → wait until the worker is past it. Any failure before the skip
/// is set enables the subscription again and skips nothing. A dry run only
/// peeks (while the failing worker is between retries) and reports.
public struct SkipProcedure: Sendable {
    public struct Request: Sendable {
        public var node: String
        public var peer: String
        public var subscription: String
        public var slot: String
        public var dryRun: Bool
        public var timeout: Double

        public init(node: String, peer: String, subscription: String, slot: String, dryRun: Bool = false, timeout: Double = 30) {
            self.node = node
            self.peer = peer
            self.subscription = subscription
            self.slot = slot
            self.dryRun = dryRun
            self.timeout = timeout
        }
    }

    public enum Action: Sendable, Equatable {
        case disable
        /// Until no worker of the subscription runs and no walsender holds the slot. Answer: `.stopped`.
        case waitStopped
        /// The first transaction NODE has not applied (a dry run retries while the slot is busy). Answer: `.pending` or `.busy`.
        case peek
        /// Records the transaction's changes in mmlite.conflicts and sets the skip, in one transaction.
        case recordAndSkip(PgOutput.Transaction)
        case enable
        /// Until the worker runs past `lsn`. Answer: `.past`.
        case waitPast(LSN)
        case say(String)
        /// On stderr.
        case warn(String)
        case finish(Outcome)
    }

    public enum Event: Sendable {
        case done
        case stopped(Bool)
        case pending(PgOutput.Transaction?)
        /// The slot stayed in use for the whole timeout.
        case busy
        case past(reached: Bool, appliedUpTo: LSN?, workerRunning: Bool)
        case failed(String)
    }

    public enum Outcome: Sendable, Equatable {
        /// Skipped, or nothing to skip (or a dry run that showed it).
        case done
        /// Nothing skipped; the subscription runs as before.
        case failed
        /// Stopped part-way: the skip may be set but not yet passed, or the worker did not stop.
        case incomplete
    }

    enum Stage: Sendable {
        case start, disabling, stopping, peeking, recording, enabling, waiting, finished
    }

    public let request: Request
    var stage = Stage.start
    var queue: [Action] = []
    var pending: PgOutput.Transaction?

    public init(_ request: Request) { self.request = request }

    var link: String { "\(request.peer) -> \(request.node)" }
    var subscription: String { request.subscription }

    public mutating func start() -> Action {
        if request.dryRun {
            stage = .peeking
            return .peek
        }
        stage = .disabling
        queue = [.disable]
        return .say("\(link): disabling \(subscription) ...")
    }

    public mutating func next(_ event: Event) -> Action {
        if let action = decide(event) { return action }
        return queue.isEmpty ? .finish(.done) : queue.removeFirst()
    }

    /// Ends with `outcome` after enabling the subscription again (nothing skipped).
    mutating func giveUp(_ lines: [Action], _ outcome: Outcome) -> Action {
        stage = .finished
        queue = [Action.enable] + lines + [.finish(outcome)]
        return queue.removeFirst()
    }

    mutating func decide(_ event: Event) -> Action? {
        switch (stage, event) {
        case (.finished, _):
            return nil
        case (.disabling, .failed(let message)):
            stage = .finished
            queue = [.finish(.failed)]
            return .warn("mmlite: \(link): could not disable \(subscription): \(message); nothing skipped")
        case (.disabling, .done) where queue.isEmpty:
            stage = .stopping
            return .waitStopped
        case (.stopping, .stopped(false)), (.stopping, .failed):
            return giveUp([.warn("mmlite: \(link): the apply worker or the walsender did not stop within \(Int(request.timeout)) s; nothing skipped")], .incomplete)
        case (.stopping, .stopped(true)):
            stage = .peeking
            return .peek
        case (.peeking, let event):
            return peeked(event)
        case (.recording, .failed(let message)):
            return giveUp([.warn("mmlite: \(link): could not record and skip: \(message); nothing skipped, \(subscription) enabled again")], .failed)
        case (.recording, .done):
            stage = .enabling
            queue = report(verb: "Skipped") + [.enable]
            return queue.removeFirst()
        case (.enabling, .failed(let message)):
            stage = .finished
            queue = [.finish(.incomplete)]
            return .warn("mmlite: \(link): the skip is set but \(subscription) could not be enabled: \(message); run ALTER SUBSCRIPTION \(subscription) ENABLE on \(request.node)")
        case (.enabling, .done) where queue.isEmpty:
            stage = .waiting
            return .waitPast(pending?.finalLSN ?? .zero)
        case (.waiting, .past(let reached, let applied, let running)):
            stage = .finished
            if reached {
                queue = [.finish(.done)]
                return .say("\(link): \(subscription) is streaming again (applied up to \(applied?.description ?? "?")).")
            }
            queue = [.finish(.incomplete)]
            return .warn("mmlite: \(link): \(subscription) is enabled but has not got past \(pending?.finalLSN.description ?? "?") yet (applied up to \(applied?.description ?? "?"), worker \(running ? "running" : "not running")); check `mmlite status`, run resolve again if the next transaction fails too")
        default:
            return nil
        }
    }

    mutating func peeked(_ event: Event) -> Action? {
        let dry = request.dryRun
        switch event {
        case .failed(let message):
            let line = "mmlite: \(link): cannot read slot \(request.slot) on \(request.peer): \(message)" + (dry ? "" : "; nothing skipped, \(subscription) enabled again")
            if dry { stage = .finished; queue = [.finish(.failed)]; return .warn(line) }
            return giveUp([.warn(line)], .failed)
        case .busy:
            let line = Action.warn("mmlite: \(link): slot \(request.slot) stayed in use for \(Int(request.timeout)) s; try again")
            if dry { stage = .finished; queue = [.finish(.incomplete)]; return line }
            return giveUp([line], .incomplete)
        case .pending(nil):
            if dry {
                stage = .finished
                queue = [.finish(.done)]
                return .say("\(link): nothing pending on slot \(request.slot); nothing would be skipped.")
            }
            return giveUp([.say("\(link): nothing pending on slot \(request.slot); nothing skipped, \(subscription) enabled again.")], .done)
        case .pending(let transaction?):
            pending = transaction
            if dry {
                stage = .finished
                queue = report(verb: "Would skip") + [.finish(.done)]
                return queue.removeFirst()
            }
            stage = .recording
            return .recordAndSkip(transaction)
        default:
            return nil
        }
    }

    /// What is (or would be) skipped, change by change.
    func report(verb: String) -> [Action] {
        guard let transaction = pending else { return [] }
        let count = transaction.changes.count
        var lines = ["\(link): \(verb) transaction \(transaction.xid) of \(request.peer) (commit LSN \(transaction.finalLSN), committed \(PgOutput.time(transaction.commitTime))), \(count) change\(count == 1 ? "" : "s"):"]
        lines += PgOutput.describe(transaction).map { "  " + $0 }
        let skip = "ALTER SUBSCRIPTION \(subscription) SKIP (lsn = '\(transaction.finalLSN)')"
        lines.append(request.dryRun
            ? "  (dry run: nothing changed; would record it in \(request.node)'s mmlite.conflicts and run \(skip))"
            : "  recorded in \(request.node)'s mmlite.conflicts (kind \(ConflictMaintenance.skipKind)); \(skip)")
        return lines.map { .say($0) }
    }
}

extension PgOutput {
    /// One line per change: "insert public.people key {"id": 1}: {...}".
    public static func describe(_ transaction: Transaction, limit: Int = 20) -> [String] {
        var lines = transaction.changes.prefix(limit).map { change in
            "\(change.operation.rawValue) \(change.relation.qualifiedName) key \(change.keyJSON): \(change.rowJSON)"
        }
        if transaction.changes.count > limit { lines.append("... and \(transaction.changes.count - limit) more changes") }
        if transaction.changes.isEmpty { lines.append("(no row changes)") }
        return lines
    }

    /// PostgreSQL's commit time (microseconds since 2000-01-01) as ISO 8601.
    public static func time(_ microseconds: Int64) -> String {
        ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: 946_684_800 + Double(microseconds) / 1_000_000))
    }
}
