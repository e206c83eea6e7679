import CLibPQ

/// An error from libpq or from the server, with the server's fields kept apart
/// (like psql's `\set VERBOSITY verbose`) so callers can match on SQLSTATE.
public struct PGError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable {
        /// Could not connect, or the connection broke.
        case connection
        /// The server answered with an ERROR (or FATAL) for a statement.
        case server
        /// COPY or protocol misuse detected on our side.
        case client
    }

    public var kind: Kind
    public var severity: String?
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var hint: String?

    public init(kind: Kind, message: String, severity: String? = nil, sqlState: String? = nil,
                detail: String? = nil, hint: String? = nil) {
        self.kind = kind
        self.message = message
        self.severity = severity
        self.sqlState = sqlState
        self.detail = detail
        self.hint = hint
    }

    public var description: String {
        var text = (severity.map { "\($0):  " } ?? "") + message
        if let sqlState { text += " (SQLSTATE \(sqlState))" }
        if let detail { text += "\nDETAIL:  \(detail)" }
        if let hint { text += "\nHINT:  \(hint)" }
        return text
    }

    /// The fields of a failed PGresult.
    init(result: OpaquePointer) {
        func field(_ code: Int32) -> String? {
            guard let value = PQresultErrorField(result, code) else { return nil }
            return String(cString: value)
        }
        let primary = field(Int32(UInt8(ascii: "M")))
            ?? String(cString: PQresultErrorMessage(result)).trimmingTrailingNewlines()
        self.init(kind: .server,
                  message: primary,
                  severity: field(Int32(UInt8(ascii: "V"))) ?? field(Int32(UInt8(ascii: "S"))),
                  sqlState: field(Int32(UInt8(ascii: "C"))),
                  detail: field(Int32(UInt8(ascii: "D"))),
                  hint: field(Int32(UInt8(ascii: "H"))))
    }
}

extension String {
    func trimmingTrailingNewlines() -> String {
        var s = Substring(self)
        while let last = s.last, last == "\n" || last == "\r" || last == " " { s = s.dropLast() }
        return String(s)
    }
}
