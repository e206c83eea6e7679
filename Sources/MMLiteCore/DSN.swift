/// libpq connection strings as text: parsing (key=value and URI forms, the
/// same rules as libpq's `conninfo_parse` / `conninfo_uri_parse`), and
/// masking of passwords for anything mmlite prints or logs.
///
/// The authoritative check that a string is a valid connection string is
/// libpq's own (`PostgresClient.parseConninfo`); this parser exists so the
/// pure parts (config validation, masking) need no library and so masking
/// still works on strings libpq rejects.
public enum DSN {
    public static let mask = "********"

    /// Whether `dsn` is the URI form.
    public static func isURI(_ dsn: String) -> Bool {
        let lower = dsn.lowercased()
        return lower.hasPrefix("postgresql://") || lower.hasPrefix("postgres://")
    }

    /// Key/value pairs of a connection string (URI query parameters included;
    /// URI user, password, host, port and dbname reported under libpq's keys).
    /// Throws on syntax errors.
    public static func parameters(_ dsn: String) throws -> [(key: String, value: String)] {
        if isURI(dsn) { return try URIForm.parse(dsn).parameters }
        let tokens = KeywordForm.tokenize(dsn)
        if let error = tokens.error { throw DSNError(message: error) }
        return tokens.pairs.map { ($0.key, $0.value) }
    }

    /// The value of `key` (last one wins, as in libpq), or nil.
    public static func value(_ key: String, in dsn: String) -> String? {
        (try? parameters(dsn))?.last(where: { $0.key == key })?.value
    }

    /// True when the string sets a password (in any form, also nested in dbname).
    public static func hasPassword(_ dsn: String) -> Bool {
        !passwords(in: dsn).isEmpty
    }

    /// Every password the string carries (for redacting them from other text,
    /// such as server error messages that quote a connection string).
    public static func passwords(in dsn: String) -> [String] {
        var found: [String] = []
        if isURI(dsn) {
            if let uri = try? URIForm.parse(dsn) {
                for (key, value) in uri.parameters where key == "password" && !value.isEmpty { found.append(value) }
                for (key, value) in uri.parameters where key == "dbname" && looksLikeConninfo(value) {
                    found += passwords(in: value)
                }
                for raw in uri.rawPasswords where !raw.isEmpty { found.append(raw) }
            }
        } else {
            let tokens = KeywordForm.tokenize(dsn)
            for pair in tokens.pairs {
                if pair.key == "password" && !pair.value.isEmpty { found.append(pair.value); found.append(pair.rawValue) }
                if pair.key == "dbname" && looksLikeConninfo(pair.value) { found += passwords(in: pair.value) }
            }
        }
        var unique: [String] = []
        for password in found where !password.isEmpty && !unique.contains(password) { unique.append(password) }
        return unique
    }

    /// `dsn` with every password replaced by `********`; everything else as
    /// written. Safe on invalid strings too (an unparsable tail that mentions
    /// a password is cut off).
    public static func masked(_ dsn: String) -> String {
        isURI(dsn) ? URIForm.masked(dsn) : KeywordForm.masked(dsn)
    }

    /// Replaces every occurrence of any of `secrets` in `text` by `********`.
    public static func redact(_ text: String, secrets: [String]) -> String {
        var result = text
        for secret in secrets.sorted(by: { $0.count > $1.count }) where secret.count >= 1 {
            result = result.replacingOccurrences(of: secret, with: mask)
        }
        return result
    }

    static func looksLikeConninfo(_ value: String) -> Bool {
        value.contains("=") || isURI(value)
    }
}

public struct DSNError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

// MARK: - key = value form

enum KeywordForm {
    struct Pair {
        var key: String
        var value: String
        var rawValue: String
        /// Where the value (with its quotes) is in the source.
        var valueRange: Range<Int>
    }

    struct Tokens {
        var pairs: [Pair] = []
        var error: String?
        /// Offset where parsing stopped because of `error`.
        var errorOffset: Int?
    }

    static func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D || c == 0x0B || c == 0x0C }

    static func tokenize(_ text: String) -> Tokens {
        let bytes = Array(text.utf8)
        var tokens = Tokens()
        var i = 0
        while i < bytes.count {
            if isSpace(bytes[i]) { i += 1; continue }
            let keyStart = i
            while i < bytes.count && !isSpace(bytes[i]) && bytes[i] != UInt8(ascii: "=") { i += 1 }
            let key = String(decoding: bytes[keyStart..<i], as: UTF8.self)
            while i < bytes.count && isSpace(bytes[i]) { i += 1 }
            guard i < bytes.count, bytes[i] == UInt8(ascii: "=") else {
                tokens.error = "missing \"=\" after \"\(key)\" in connection info string"
                tokens.errorOffset = keyStart
                return tokens
            }
            i += 1
            while i < bytes.count && isSpace(bytes[i]) { i += 1 }
            let valueStart = i
            var value: [UInt8] = []
            if i < bytes.count && bytes[i] == UInt8(ascii: "'") {
                i += 1
                var closed = false
                while i < bytes.count {
                    if bytes[i] == UInt8(ascii: "\\") {
                        i += 1
                        if i < bytes.count { value.append(bytes[i]); i += 1 }
                    } else if bytes[i] == UInt8(ascii: "'") {
                        i += 1
                        closed = true
                        break
                    } else {
                        value.append(bytes[i]); i += 1
                    }
                }
                if !closed {
                    tokens.error = "unterminated quoted string in connection info string"
                    tokens.errorOffset = keyStart
                    tokens.pairs.append(Pair(key: key, value: String(decoding: value, as: UTF8.self),
                                             rawValue: String(decoding: bytes[valueStart..<i], as: UTF8.self),
                                             valueRange: valueStart..<i))
                    return tokens
                }
            } else {
                while i < bytes.count && !isSpace(bytes[i]) {
                    if bytes[i] == UInt8(ascii: "\\") {
                        i += 1
                        if i < bytes.count { value.append(bytes[i]); i += 1 }
                    } else {
                        value.append(bytes[i]); i += 1
                    }
                }
            }
            tokens.pairs.append(Pair(key: key, value: String(decoding: value, as: UTF8.self),
                                     rawValue: String(decoding: bytes[valueStart..<i], as: UTF8.self),
                                     valueRange: valueStart..<i))
        }
        return tokens
    }

    static func masked(_ text: String) -> String {
        let tokens = tokenize(text)
        var bytes = Array(text.utf8)
        var cut: Int? = nil
        if let offset = tokens.errorOffset {
            let tail = String(decoding: bytes[offset...], as: UTF8.self).lowercased()
            if tail.contains("password") { cut = offset }
        }
        // Replace from the end so earlier ranges stay valid.
        for pair in tokens.pairs.reversed() {
            if let cut, pair.valueRange.lowerBound >= cut { continue }
            if pair.key == "password" {
                bytes.replaceSubrange(pair.valueRange, with: Array(DSN.mask.utf8))
            } else if pair.key == "dbname" && DSN.looksLikeConninfo(pair.value) && DSN.hasPassword(pair.value) {
                let inner = SQL.literal(DSN.masked(pair.value))
                bytes.replaceSubrange(pair.valueRange, with: Array(inner.utf8))
            }
        }
        if let cut {
            let kept = String(decoding: bytes[..<min(cut, bytes.count)], as: UTF8.self)
            return kept + DSN.mask
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

// MARK: - URI form

enum URIForm {
    struct Parsed {
        var parameters: [(key: String, value: String)]
        var rawPasswords: [String]
    }

    static func schemeLength(_ text: String) -> Int {
        text.lowercased().hasPrefix("postgresql://") ? "postgresql://".count : "postgres://".count
    }

    static func percentDecode(_ text: Substring) throws -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                      let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
                else { throw DSNError(message: "invalid percent-encoded token: \"\(text)\"") }
                guard value != 0 else { throw DSNError(message: "forbidden value %00 in percent-encoded value: \"\(text)\"") }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func parse(_ text: String) throws -> Parsed {
        var result = Parsed(parameters: [], rawPasswords: [])
        let rest = Substring(text.dropFirst(schemeLength(text)))
        // Query string.
        let (beforeQuery, query): (Substring, Substring?) = {
            if let q = rest.firstIndex(of: "?") { return (rest[..<q], rest[rest.index(after: q)...]) }
            return (rest, nil)
        }()
        // userinfo ends at the first '@' before any '/'.
        var hostPart = beforeQuery
        if let at = beforeQuery.firstIndex(where: { $0 == "@" || $0 == "/" }), beforeQuery[at] == "@" {
            let userinfo = beforeQuery[..<at]
            hostPart = beforeQuery[beforeQuery.index(after: at)...]
            if let colon = userinfo.firstIndex(of: ":") {
                let user = userinfo[..<colon]
                let password = userinfo[userinfo.index(after: colon)...]
                result.rawPasswords.append(String(password))
                if !user.isEmpty { result.parameters.append(("user", try percentDecode(user))) }
                result.parameters.append(("password", try percentDecode(password)))
            } else if !userinfo.isEmpty {
                result.parameters.append(("user", try percentDecode(userinfo)))
            }
        }
        var hosts = hostPart
        if let slash = hostPart.firstIndex(of: "/") {
            hosts = hostPart[..<slash]
            let dbname = hostPart[hostPart.index(after: slash)...]
            if !dbname.isEmpty { result.parameters.append(("dbname", try percentDecode(dbname))) }
        }
        if !hosts.isEmpty {
            var hostList: [String] = []
            var portList: [String] = []
            for entry in hosts.split(separator: ",", omittingEmptySubsequences: false) {
                if entry.hasPrefix("[") {
                    guard let close = entry.firstIndex(of: "]") else {
                        throw DSNError(message: "end of string reached when looking for matching \"]\" in IPv6 host address in URI: \"\(DSN.masked(text))\"")
                    }
                    hostList.append(String(entry[entry.index(after: entry.startIndex)..<close]))
                    let after = entry[entry.index(after: close)...]
                    portList.append(after.hasPrefix(":") ? String(after.dropFirst()) : "")
                } else if let colon = entry.firstIndex(of: ":") {
                    hostList.append(try percentDecode(entry[..<colon]))
                    portList.append(String(entry[entry.index(after: colon)...]))
                } else {
                    hostList.append(try percentDecode(entry))
                    portList.append("")
                }
            }
            if hostList.contains(where: { !$0.isEmpty }) { result.parameters.append(("host", hostList.joined(separator: ","))) }
            if portList.contains(where: { !$0.isEmpty }) { result.parameters.append(("port", portList.joined(separator: ","))) }
        }
        if let query {
            for item in query.split(separator: "&") {
                guard let equals = item.firstIndex(of: "=") else {
                    throw DSNError(message: "missing key/value separator \"=\" in URI query parameter: \"\(item)\"")
                }
                let key = try percentDecode(item[..<equals])
                let raw = item[item.index(after: equals)...]
                if key == "password" { result.rawPasswords.append(String(raw)) }
                result.parameters.append((key, try percentDecode(raw)))
            }
        }
        return result
    }

    static func masked(_ text: String) -> String {
        let prefixLength = schemeLength(text)
        let scheme = String(text.prefix(prefixLength))
        var rest = String(text.dropFirst(prefixLength))
        var query: String? = nil
        if let q = rest.firstIndex(of: "?") {
            query = String(rest[rest.index(after: q)...])
            rest = String(rest[..<q])
        }
        if let at = rest.firstIndex(where: { $0 == "@" || $0 == "/" }), rest[at] == "@" {
            let userinfo = rest[..<at]
            if let colon = userinfo.firstIndex(of: ":") {
                rest = String(userinfo[..<colon]) + ":" + DSN.mask + String(rest[at...])
            }
        }
        var output = scheme + rest
        if let query {
            let items = query.split(separator: "&", omittingEmptySubsequences: false).map { item -> String in
                guard let equals = item.firstIndex(of: "=") else { return String(item) }
                let key = (try? percentDecode(item[..<equals])) ?? String(item[..<equals])
                if key.lowercased() == "password" { return String(item[..<equals]) + "=" + DSN.mask }
                if key == "dbname", let value = try? percentDecode(item[item.index(after: equals)...]),
                   DSN.looksLikeConninfo(value), DSN.hasPassword(value) {
                    return String(item[..<equals]) + "=" + DSN.mask
                }
                return String(item)
            }
            output += "?" + items.joined(separator: "&")
        }
        return output
    }
}
