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
    public func evaluate(_ thresholds: Thresholds) -> (Health, [String]) {
        var problems: [(Health, String)] = []
        if !publisherReachable { problems.append((.critical, "publisher \(publisher) is unreachable")) }
        if !subscriberReachable { problems.append((.critical, "subscriber \(subscriber) is unreachable")) }
        if subscriptionExists == false { problems.append((.critical, "subscription \(subscription) is missing on \(subscriber) (run mmlite apply)")) }
        if slotExists == false { problems.append((.critical, "slot \(slot) is missing on \(publisher) (run mmlite apply)")) }
        if subscriptionEnabled == false { problems.append((.critical, "subscription \(subscription) is disabled (ALTER SUBSCRIPTION \(subscription) ENABLE)")) }
        if subscriptionEnabled == true && workerPID == nil {
            problems.append((.critical, "no apply worker runs for \(subscription)" + (lastError.map { ": \($0)" } ?? ((applyErrorCount ?? 0) > 0 ? " (\(applyErrorCount!) apply errors; see \(subscriber)'s server log)" : ""))))
        }
        if workerPID != nil && slotActive == false { problems.append((.warning, "slot \(slot) is not active yet (the worker is connecting)")) }
        if walStatus == "lost" { problems.append((.critical, "slot \(slot) has lost required WAL: \(subscriber) must rejoin")) }
        if let lag = lagBytes {
            if lag >= thresholds.criticalBytes { problems.append((.critical, "lag \(formatBytes(lag))")) }
            else if lag >= thresholds.warningBytes { problems.append((.warning, "lag \(formatBytes(lag))")) }
        }
        if let seconds = lagSeconds {
            if seconds >= thresholds.criticalSeconds { problems.append((.critical, "lag \(Int(seconds)) s")) }
            else if seconds >= thresholds.warningSeconds { problems.append((.warning, "lag \(Int(seconds)) s")) }
        }
        let health = problems.map(\.0).max() ?? .ok
        return (health, problems.map(\.1))
    }
}
