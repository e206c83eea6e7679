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
