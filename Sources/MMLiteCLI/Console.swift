import Foundation
import Logging
import MMLiteCore

/// Where commands write. Every line goes through `redact`, so a password
/// that slipped into a server message is never printed.
public final class Console: @unchecked Sendable {
    private let lock = NSLock()
    private let writeOut: (String) -> Void
    private let writeErr: (String) -> Void
    private var secrets: [String] = []
    public var verbose = false

    public init(out: @escaping (String) -> Void, err: @escaping (String) -> Void) {
        writeOut = out
        writeErr = err
    }

    /// stdout and stderr of this process.
    public static func standard() -> Console {
        Console(out: { text in
            FileHandle.standardOutput.write(Data(text.utf8))
        }, err: { text in
            FileHandle.standardError.write(Data(text.utf8))
        })
    }

    /// Passwords to mask wherever they appear.
    public func addSecrets(_ more: [String]) {
        lock.lock(); defer { lock.unlock() }
        for secret in more where !secret.isEmpty && !secrets.contains(secret) { secrets.append(secret) }
    }

    public func redact(_ text: String) -> String {
        lock.lock(); let current = secrets; lock.unlock()
        return DSN.redact(text, secrets: current)
    }

    public func print(_ text: String = "") {
        writeOut(redact(text) + "\n")
    }

    public func error(_ text: String) {
        writeErr(redact(text) + "\n")
    }

    /// Shown with -v/--verbose only (on stderr).
    public func debug(_ text: String) {
        if verbose { writeErr(redact(text) + "\n") }
    }

    /// A swift-log logger that writes through this console (masked).
    public func logger(label: String = "mmlite") -> Logger {
        Logger(label: label) { _ in ConsoleLogHandler(console: self) }
    }
}

/// Captures output, for tests and for callers that want the text.
public final class OutputBuffer: @unchecked Sendable {
    private let lock = NSLock()
    private var outText = ""
    private var errText = ""
    public init() {}
    public var out: String { lock.lock(); defer { lock.unlock() }; return outText }
    public var err: String { lock.lock(); defer { lock.unlock() }; return errText }
    public var all: String { out + err }

    public func console() -> Console {
        Console(out: { [self] text in lock.lock(); outText += text; lock.unlock() },
                err: { [self] text in lock.lock(); errText += text; lock.unlock() })
    }
}

struct ConsoleLogHandler: LogHandler {
    let console: Console
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level

    init(console: Console) {
        self.console = console
        logLevel = console.verbose ? .debug : .notice
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String,
             file: String, function: String, line: UInt) {
        let merged = self.metadata.merging(metadata ?? [:]) { $1 }
        let suffix = merged.isEmpty ? "" : " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let text = level >= .warning ? "\(level): \(message)\(suffix)" : "\(message)\(suffix)"
        if level >= .warning || console.verbose { console.error(text) }
    }
}

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

/// Test hooks: `afterStep` is called by apply after each statement it ran,
/// `afterPhase` by join and part after each numbered phase.
public struct Hooks: Sendable {
    public var afterStep: (@Sendable (_ index: Int, _ step: Step) -> Void)?
    public var afterPhase: (@Sendable (_ number: Int, _ title: String) -> Void)?
    public init(afterStep: (@Sendable (Int, Step) -> Void)? = nil, afterPhase: (@Sendable (Int, String) -> Void)? = nil) {
        self.afterStep = afterStep
        self.afterPhase = afterPhase
    }
}

public struct Context {
    public var console: Console
    public var hooks: Hooks
    public init(console: Console, hooks: Hooks = Hooks()) {
        self.console = console
        self.hooks = hooks
    }
}

/// A small JSON writer with key order kept (stable output for scripts).
indirect enum JSON {
    case string(String)
    case number(Double)
    case integer(Int64)
    case bool(Bool)
    case null
    case array([JSON])
    case object([(String, JSON)])
    /// Text that already is JSON (e.g. a jsonb value as PostgreSQL prints it).
    case raw(String)

    static func optional(_ value: String?) -> JSON { value.map { .string($0) } ?? .null }
    static func optional(_ value: Int64?) -> JSON { value.map { .integer($0) } ?? .null }
    static func optional(_ value: Double?) -> JSON { value.map { .number($0) } ?? .null }
    static func optional(_ value: Bool?) -> JSON { value.map { .bool($0) } ?? .null }

    func render(indent: Int = 0) -> String {
        let pad = String(repeating: "  ", count: indent)
        let inner = String(repeating: "  ", count: indent + 1)
        switch self {
        case .string(let text): return Self.quote(text)
        case .number(let value):
            if value.isNaN || value.isInfinite { return "null" }
            let rounded = (value * 1000).rounded() / 1000
            return rounded == rounded.rounded() && abs(rounded) < 1e15 ? String(Int64(rounded)) + ".0" : String(rounded)
        case .integer(let value): return String(value)
        case .bool(let value): return value ? "true" : "false"
        case .null: return "null"
        case .raw(let text): return text
        case .array(let items):
            if items.isEmpty { return "[]" }
            return "[\n" + items.map { inner + $0.render(indent: indent + 1) }.joined(separator: ",\n") + "\n" + pad + "]"
        case .object(let pairs):
            if pairs.isEmpty { return "{}" }
            return "{\n" + pairs.map { inner + Self.quote($0.0) + ": " + $0.1.render(indent: indent + 1) }.joined(separator: ",\n") + "\n" + pad + "}"
        }
    }

    static func quote(_ text: String) -> String { jsonQuoted(text) }
}
