/// Exit codes (documented in docs/cli.md).
public enum ExitStatus: Int32, Sendable {
    /// Success; doctor: every check passed; status --check: OK.
    case ok = 0
    /// doctor: warnings only; status --check: WARNING; apply: a statement failed, nothing was changed.
    case warning = 1
    /// doctor: a check failed; apply: refused because a check failed (nothing changed); status --check: CRITICAL.
    case failure = 2
    /// status --check: UNKNOWN (the state could not be determined).
    case unknown = 3
    /// Bad command line.
    case usage = 64
    /// A node could not be reached (apply changed nothing).
    case unavailable = 69
    /// Internal error.
    case software = 70
    /// apply stopped part-way: some statements ran; re-run apply to finish.
    case partial = 75
    /// The configuration file is missing or invalid, or a prerequisite is not installed.
    case config = 78
}

/// An error that ends a command with a message and an exit code.
public struct CLIError: Error, CustomStringConvertible {
    public var status: ExitStatus
    public var message: String
    public init(_ status: ExitStatus, _ message: String) {
        self.status = status
        self.message = message
    }
    public var description: String { message }
}
