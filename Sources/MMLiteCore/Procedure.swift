/// Pieces shared by the multi-node procedures (`JoinProcedure`,
/// `PartProcedure`): each is a state machine that is handed what the tool
/// observed and answers with the next action; the command-line tool's runner
/// performs the action (I/O, waiting, printing) and reports back. A dry run
/// drives the same machine with simulated results, so it prints exactly the
/// actions a real run would perform.

/// A WAL position the procedure learns while it runs; in a dry run, a named
/// placeholder ("C_n2") standing for the value a real run would read.
public enum Position: Sendable, Equatable, CustomStringConvertible {
    case lsn(LSN)
    case placeholder(String)

    public var description: String {
        switch self {
        case .lsn(let lsn): return lsn.description
        case .placeholder(let name): return name
        }
    }

    public var lsn: LSN? {
        if case .lsn(let value) = self { return value }
        return nil
    }

    /// Whether `self` is known to be at or past `other` (false when either is a placeholder).
    public func reaches(_ other: Position) -> Bool {
        guard let mine = lsn, let theirs = other.lsn else { return false }
        return mine >= theirs
    }
}

/// Something a procedure waits for; the runner polls it until `progress`
/// says done, or the timeout passes.
public enum WaitCondition: Sendable, Equatable {
    /// `slot` on `node` has confirmed `target` (its subscriber applied up to there).
    case slotConfirmed(node: String, slot: String, target: Position, what: String)
    /// No apply worker of `subscription` runs on `node`.
    case workerStopped(node: String, subscription: String)
    /// No walsender uses `slot` on `node`.
    case slotInactive(node: String, slot: String)
    /// Every transaction running on `node` when `horizon` (an xid8) was read has ended.
    case transactionsEnded(node: String, horizon: String)

    public var node: String {
        switch self {
        case .slotConfirmed(let node, _, _, _), .workerStopped(let node, _), .slotInactive(let node, _),
             .transactionsEnded(let node, _):
            return node
        }
    }

    /// What the runner reads once per poll.
    public var query: String {
        switch self {
        case .slotConfirmed(_, let slot, _, _): return JoinSQL.slotPosition(slot)
        case .workerStopped(_, let subscription): return JoinSQL.workerRunning(subscription)
        case .slotInactive(_, let slot): return JoinSQL.slotActive(slot)
        case .transactionsEnded(_, let horizon): return JoinSQL.transactionsEnded(since: horizon)
        }
    }

    /// What a dry run prints for it: the query, repeated until its value is this.
    public var until: String {
        switch self {
        case .slotConfirmed(_, _, let target, _): return "until >= \(target)"
        case .workerStopped: return "until 0"
        case .slotInactive: return "until not true"
        case .transactionsEnded: return "until true"
        }
    }

    /// Judges one reading of `query` (its first column, nil when no row or NULL).
    public func progress(_ value: String?) -> WaitProgress {
        switch self {
        case .slotConfirmed(let node, let slot, let target, _):
            guard let text = value, let position = LSN(text) else { return .failed("\(node): slot \(slot) is missing") }
            guard let goal = target.lsn else { return .done }
            return position >= goal ? .done : .pending(position, "\(formatBytes(goal.bytes(since: position))) to go")
        case .workerStopped:
            return value == "0" ? .done : .pending(nil, "running")
        case .slotInactive:
            return value == "t" ? .pending(nil, "in use") : .done
        case .transactionsEnded:
            return value == "t" ? .done : .pending(nil, "still running")
        }
    }

    /// How the wait is named in progress lines and timeouts.
    public var what: String {
        switch self {
        case .slotConfirmed(_, _, _, let what): return what
        case .workerStopped(let node, let subscription): return "\(node)'s worker for \(subscription) to exit"
        case .slotInactive(let node, let slot): return "slot \(slot) on \(node) to become inactive"
        case .transactionsEnded(let node, _): return "\(node)'s transactions that were running at the cut to end (a prepared transaction keeps them open)"
        }
    }
}

public enum WaitProgress: Sendable, Equatable {
    case done
    /// Not yet: where it stands (if a position) and what is left, for the progress line.
    case pending(LSN?, String)
    /// The thing waited on is gone: the procedure cannot go on.
    case failed(String)
}

/// The probes a procedure needs before it changes anything.
public struct Probes: Sendable, Equatable {
    /// Nodes to test the mmlite plugin on.
    public var plugin: Set<String> = []
    /// Links whose subscriber should try the publisher's peer_dsn.
    public var peers: Set<Link> = []
    public init(plugin: Set<String> = [], peers: Set<Link> = []) {
        self.plugin = plugin
        self.peers = peers
    }
}

/// How a procedure ended, for the runner's exit code.
public enum ProcedureOutcome: Sendable, Equatable {
    /// Done (or nothing to do).
    case done
    /// Refused before changing anything (or only idempotent, inert objects;
    /// the lines say which), with the failed checks to show.
    case refused(Refusal, lines: [String], checks: [CheckResult] = [])
    /// Stopped by a failure; `changed`: a re-run must finish what was started.
    case stopped(lines: [String], changed: Bool)
}

public enum Refusal: Sendable, Equatable {
    /// The command line names something wrong (exit 64).
    case usage
    /// A node must be reachable and is not (exit 69).
    case unreachable
    /// A check or a precondition failed (exit 2).
    case failedCheck
}

/// A statement as a dry run shows it: where it runs and the SQL (masked).
public struct ShownStatement: Sendable, Equatable {
    public var node: String
    public var sql: String
    /// Shown as a comment after the statement (what a read yields, how long a wait repeats).
    public var note: String?
    public init(_ node: String, _ sql: String, note: String? = nil) {
        self.node = node
        self.sql = sql
        self.note = note
    }

    /// "-- on n2:\nSELECT ...; -- until 0"
    public var text: String { "-- on \(node):\n\(sql);" + (note.map { " -- \($0)" } ?? "") }
}
