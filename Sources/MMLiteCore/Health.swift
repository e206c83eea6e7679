/// Nagios-style health of a link, a node or the mesh.
public enum Health: String, Sendable, Equatable, Comparable, Codable {
    case ok, warning, critical, unknown

    var rank: Int {
        switch self {
        case .ok: return 0
        case .warning: return 1
        case .unknown: return 2
        case .critical: return 3
        }
    }
    public static func < (a: Health, b: Health) -> Bool { a.rank < b.rank }

    /// Nagios exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    public var nagiosCode: Int32 {
        switch self {
        case .ok: return 0
        case .warning: return 1
        case .critical: return 2
        case .unknown: return 3
        }
    }
}

public struct Thresholds: Sendable, Equatable {
    public var warningBytes: UInt64
    public var criticalBytes: UInt64
    public var warningSeconds: Double
    public var criticalSeconds: Double
    public init(warningBytes: UInt64 = 16 << 20, criticalBytes: UInt64 = 1 << 30,
                warningSeconds: Double = 60, criticalSeconds: Double = 600) {
        self.warningBytes = warningBytes
        self.criticalBytes = criticalBytes
        self.warningSeconds = warningSeconds
        self.criticalSeconds = criticalSeconds
    }
}

/// What `status` observed about one directed link publisher → subscriber.
public struct LinkStatus: Sendable, Equatable {
    public var publisher: String
    public var subscriber: String
    public var subscription: String
    public var slot: String
    public var filter: LinkFilter?
    public var publisherReachable: Bool
    public var subscriberReachable: Bool
    // Subscriber side.
    public var subscriptionExists: Bool?
    public var subscriptionEnabled: Bool?
    public var workerPID: Int?
    public var receivedLSN: LSN?
    public var applyErrorCount: Int64?
    public var lastError: String?
    // Publisher side.
    public var slotExists: Bool?
    public var slotPlugin: String?
    public var slotActive: Bool?
    public var walStatus: String?
    public var publisherLSN: LSN?
    public var confirmedFlushLSN: LSN?
    public var restartLSN: LSN?
    public var replayLagSeconds: Double?

    public init(publisher: String, subscriber: String, subscription: String, slot: String,
                publisherReachable: Bool, subscriberReachable: Bool) {
        self.publisher = publisher
        self.subscriber = subscriber
        self.subscription = subscription
        self.slot = slot
        self.publisherReachable = publisherReachable
        self.subscriberReachable = subscriberReachable
    }

    public var workerRunning: Bool? { subscriptionExists == true ? workerPID != nil : nil }

    /// WAL the subscriber has not confirmed yet.
    public var lagBytes: UInt64? {
        guard let current = publisherLSN, let confirmed = confirmedFlushLSN else { return nil }
        return current.bytes(since: confirmed)
    }

    /// WAL the slot keeps on the publisher.
    public var retainedBytes: UInt64? {
        guard let current = publisherLSN, let restart = restartLSN else { return nil }
        return current.bytes(since: restart)
    }

    /// Seconds behind: the walsender's replay lag; 0 when nothing is pending.
    public var lagSeconds: Double? {
        if let replayLagSeconds { return replayLagSeconds }
        return slotActive == true && workerPID != nil ? 0 : nil
    }

    /// Health and the problems that decide it.
    public func evaluate(_ thresholds: Thresholds) -> (Health, [LinkProblem]) {
        var problems: [LinkProblem] = []
        if !publisherReachable { problems.append(.publisherUnreachable(publisher)) }
        if !subscriberReachable { problems.append(.subscriberUnreachable(subscriber)) }
        if subscriptionExists == false { problems.append(.subscriptionMissing(subscription, on: subscriber)) }
        if slotExists == false { problems.append(.slotMissing(slot, on: publisher)) }
        if subscriptionEnabled == false { problems.append(.subscriptionDisabled(subscription)) }
        if subscriptionEnabled == true && workerPID == nil {
            problems.append(.noWorker(subscription, subscriber: subscriber, lastError: lastError, applyErrors: applyErrorCount ?? 0))
        }
        if workerPID != nil && slotActive == false { problems.append(.slotInactive(slot)) }
        if walStatus == "lost" { problems.append(.walLost(slot, subscriber: subscriber)) }
        if let lag = lagBytes {
            if lag >= thresholds.criticalBytes { problems.append(.lagBytes(lag, .critical)) }
            else if lag >= thresholds.warningBytes { problems.append(.lagBytes(lag, .warning)) }
        }
        if let seconds = lagSeconds {
            if seconds >= thresholds.criticalSeconds { problems.append(.lagSeconds(seconds, .critical)) }
            else if seconds >= thresholds.warningSeconds { problems.append(.lagSeconds(seconds, .warning)) }
        }
        return (LinkProblem.health(of: problems), problems)
    }

    /// Whether the link looks stuck on one transaction (an enabled
    /// subscription without a worker that has apply errors) and the
    /// publisher can be asked which one.
    public var mayBeStuck: Bool {
        subscriptionEnabled == true && workerPID == nil && (applyErrorCount ?? 0) > 0 && publisherReachable
    }

    /// What `status` reports for the link: `evaluate`, with a stuck link
    /// replacing the missing-worker problem, and WAL the slot retains.
    public func assess(_ thresholds: Thresholds, retainedWarningBytes: UInt64, stuck: StuckLink?) -> LinkAssessment {
        var (_, problems) = evaluate(thresholds)
        if let stuck {
            problems.removeAll { if case .noWorker = $0 { return true } else { return false } }
            problems.append(.stuck(stuck))
        }
        if let retained = retainedBytes, retained >= retainedWarningBytes {
            problems.append(.walRetained(slot, bytes: retained, publisher: publisher, subscriber: subscriber, subscriberReachable: subscriberReachable))
        } else if !subscriberReachable && slotExists == true {
            problems.append(.slotKeepsWAL(slot, publisher: publisher, subscriber: subscriber))
        }
        return LinkAssessment(link: self, problems: problems, stuck: stuck)
    }

    /// A link to or from a node that has not joined the running mesh: its
    /// objects are expected to be missing.
    public func notJoined(_ node: String, publication: String, member: String) -> LinkAssessment {
        LinkAssessment(link: self, problems: [.notJoined(node, publication: publication, member: member)], stuck: nil)
    }
}

/// A link whose apply worker keeps failing on one transaction.
public struct StuckLink: Sendable, Equatable {
    public enum Evidence: Sendable, Equatable {
        /// The first transaction the subscriber has not applied, read from the
        /// slot: xid, commit LSN and its first changes (described).
        case pending(xid: UInt32, commitLSN: LSN, changes: String)
        /// The slot is busy (the worker is retrying); the failing
        /// transaction follows `appliedUpTo`.
        case retrying(appliedUpTo: LSN?)
    }
    public var publisher: String
    public var subscriber: String
    public var applyErrors: Int64
    public var evidence: Evidence

    public init(publisher: String, subscriber: String, applyErrors: Int64, evidence: Evidence) {
        self.publisher = publisher
        self.subscriber = subscriber
        self.applyErrors = applyErrors
        self.evidence = evidence
    }

    public var failingLSN: LSN? {
        if case .pending(_, let lsn, _) = evidence { return lsn }
        return nil
    }

    public var summary: String {
        let advice = "see \(subscriber)'s server log for the error; to skip it: mmlite resolve \(subscriber) --skip --from \(publisher)"
        switch evidence {
        case .pending(let xid, let lsn, let changes):
            return "stuck: the apply worker keeps failing (\(applyErrors) apply errors) on transaction \(xid) of \(publisher), commit LSN \(lsn): \(changes); \(advice)"
        case .retrying(let appliedUpTo):
            return "stuck: no apply worker and \(applyErrors) apply errors (the worker is retrying; the failing transaction follows \(appliedUpTo?.description ?? "the start")); \(advice)"
        }
    }
}

/// One thing wrong with a link, with the health it costs.
public enum LinkProblem: Sendable, Equatable {
    case publisherUnreachable(String)
    case subscriberUnreachable(String)
    case subscriptionMissing(String, on: String)
    case slotMissing(String, on: String)
    case subscriptionDisabled(String)
    /// An enabled subscription without an apply worker.
    case noWorker(String, subscriber: String, lastError: String?, applyErrors: Int64)
    case slotInactive(String)
    case walLost(String, subscriber: String)
    case lagBytes(UInt64, Health)
    case lagSeconds(Double, Health)
    case stuck(StuckLink)
    case walRetained(String, bytes: UInt64, publisher: String, subscriber: String, subscriberReachable: Bool)
    /// The subscriber is unreachable and its slot on the publisher keeps WAL.
    case slotKeepsWAL(String, publisher: String, subscriber: String)
    /// One end has not joined the running mesh.
    case notJoined(String, publication: String, member: String)

    public var health: Health {
        switch self {
        case .slotInactive, .walRetained, .slotKeepsWAL, .notJoined: return .warning
        case .lagBytes(_, let level), .lagSeconds(_, let level): return level
        default: return .critical
        }
    }

    public static func health(of problems: [LinkProblem]) -> Health {
        problems.map(\.health).max() ?? .ok
    }

    public var message: String {
        switch self {
        case .publisherUnreachable(let node): return "publisher \(node) is unreachable"
        case .subscriberUnreachable(let node): return "subscriber \(node) is unreachable"
        case .subscriptionMissing(let name, let node): return "subscription \(name) is missing on \(node) (run mmlite apply)"
        case .slotMissing(let name, let node): return "slot \(name) is missing on \(node) (run mmlite apply)"
        case .subscriptionDisabled(let name): return "subscription \(name) is disabled (ALTER SUBSCRIPTION \(name) ENABLE)"
        case .noWorker(let name, let subscriber, let lastError, let errors):
            return "no apply worker runs for \(name)" + (lastError.map { ": \($0)" } ?? (errors > 0 ? " (\(errors) apply errors; see \(subscriber)'s server log)" : ""))
        case .slotInactive(let slot): return "slot \(slot) is not active yet (the worker is connecting)"
        case .walLost(let slot, let subscriber): return "slot \(slot) has lost required WAL: \(subscriber) must rejoin"
        case .lagBytes(let bytes, _): return "lag \(formatBytes(bytes))"
        case .lagSeconds(let seconds, _): return "lag \(Int(seconds)) s"
        case .stuck(let stuck): return stuck.summary
        case .walRetained(let slot, let bytes, let publisher, let subscriber, let subscriberReachable):
            return "slot \(slot) retains \(formatBytes(bytes)) of WAL on \(publisher)" + (subscriberReachable ? "" : "; if \(subscriber) is gone for good: mmlite part \(subscriber) --force")
        case .slotKeepsWAL(let slot, let publisher, let subscriber):
            return "\(publisher)'s slot \(slot) keeps WAL for \(subscriber) while it is unreachable; if it is gone for good: mmlite part \(subscriber) --force"
        case .notJoined(let node, let publication, let member):
            return "\(node) has not joined the mesh (no publication \(publication) on it): mmlite join \(node) --from \(member)"
        }
    }
}

/// A link as `status` reports it.
public struct LinkAssessment: Sendable, Equatable {
    public var link: LinkStatus
    public var problems: [LinkProblem]
    public var stuck: StuckLink?

    public init(link: LinkStatus, problems: [LinkProblem], stuck: StuckLink?) {
        self.link = link
        self.problems = problems
        self.stuck = stuck
    }

    public var health: Health { LinkProblem.health(of: problems) }
    public var messages: [String] { problems.map(\.message) }
}

extension MeshView {
    /// What the observed states say about one link: a node without a state
    /// did not answer. `publisherLSN` is the publisher's current WAL position.
    public func linkStatus(for link: Link, publisherLSN: LSN?) -> LinkStatus {
        let publisher = states[link.publisher]
        let subscriber = states[link.subscriber]
        var status = LinkStatus(publisher: link.publisher, subscriber: link.subscriber,
                                subscription: names.subscription(publisher: link.publisher),
                                slot: names.slot(subscriber: link.subscriber),
                                publisherReachable: publisher != nil, subscriberReachable: subscriber != nil)
        status.filter = effectiveFilter(for: link)
        if let publisher {
            status.publisherLSN = publisherLSN
            let slot = publisher.slots[status.slot]
            status.slotExists = slot != nil
            status.slotPlugin = slot?.plugin
            status.slotActive = slot?.active
            status.restartLSN = slot?.restartLSN
            status.confirmedFlushLSN = slot?.confirmedFlushLSN
            status.replayLagSeconds = slot?.replayLagSeconds
            status.walStatus = slot?.walStatus
        }
        if let subscriber {
            let subscription = subscriber.subscriptions[status.subscription]
            status.subscriptionExists = subscription != nil
            status.subscriptionEnabled = subscription?.enabled
            status.workerPID = subscription?.workerPID
            status.receivedLSN = subscription?.receivedLSN
            status.applyErrorCount = subscription.flatMap { s in s.applyErrors.map { $0 + (s.syncErrors ?? 0) } }
        }
        return status
    }
}
