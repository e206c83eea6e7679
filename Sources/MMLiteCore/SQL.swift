/// Quoting of SQL identifiers and literals, and schema-qualified table names.
public enum SQL {
    /// `name` as an identifier: bare when it is a plain lower-case identifier
    /// that is not a keyword we might meet, double-quoted otherwise.
    public static func identifier(_ name: String) -> String {
        if isPlainIdentifier(name) && !reserved.contains(name) { return name }
        return "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// `value` as a string literal; backslashes force the `E'...'` form so the
    /// result means the same whatever `standard_conforming_strings` says.
    public static func literal(_ value: String) -> String {
        let doubled = value.replacingOccurrences(of: "'", with: "''")
        if value.contains("\\") {
            return "E'" + doubled.replacingOccurrences(of: "\\", with: "\\\\") + "'"
        }
        return "'" + doubled + "'"
    }

    static func isPlainIdentifier(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.utf8.count <= 63 else { return false }
        guard first == "_" || ("a"..."z").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }

    /// Keywords that cannot be bare table, schema or object names.
    static let reserved: Set<String> = [
        "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "both", "case", "cast",
        "check", "collate", "column", "constraint", "create", "current_catalog", "current_date", "current_role",
        "current_time", "current_timestamp", "current_user", "default", "deferrable", "desc", "distinct", "do",
        "else", "end", "except", "false", "fetch", "for", "foreign", "from", "grant", "group", "having", "in",
        "initially", "intersect", "into", "lateral", "leading", "limit", "localtime", "localtimestamp", "not",
        "null", "offset", "on", "only", "or", "order", "placing", "primary", "references", "returning", "select",
        "session_user", "some", "symmetric", "table", "then", "to", "trailing", "true", "union", "unique", "user",
        "using", "variadic", "when", "where", "window", "with", "user", "authorization", "binary", "collation",
        "concurrently", "cross", "freeze", "full", "ilike", "inner", "is", "isnull", "join", "left", "like",
        "natural", "notnull", "outer", "overlaps", "right", "similar", "tablesample", "verbose",
    ]
}

/// A table (or other relation) named by schema and name, as stored in the
/// catalog (case preserved, no quotes).
public struct QualifiedName: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var schema: String
    public var name: String

    public init(schema: String, name: String) {
        self.schema = schema
        self.name = name
    }

    /// As SQL: `public.users`, `"Sales"."Orders"`.
    public var sql: String { SQL.identifier(schema) + "." + SQL.identifier(name) }
    public var description: String { sql }

    public static func < (lhs: QualifiedName, rhs: QualifiedName) -> Bool {
        (lhs.schema, lhs.name) < (rhs.schema, rhs.name)
    }
}

/// An entry of `mesh.tables`: one table or every table of a schema.
public enum TablePattern: Hashable, Sendable, CustomStringConvertible {
    case table(QualifiedName)
    case allTables(schema: String)

    /// Parses `schema.table`, `schema.*`; parts may be double-quoted
    /// (`"Sales"."Orders"`); unquoted parts fold to lower case as in SQL.
    public init(parsing text: String) throws {
        var parts: [String] = []
        var quotedFlags: [Bool] = []
        var index = text.startIndex
        func fail(_ why: String) -> TablePatternError {
            TablePatternError(message: "\"\(text)\" is not a table name (\(why)); write schema.table or schema.*")
        }
        while true {
            guard index < text.endIndex else { throw fail("empty part") }
            if text[index] == "\"" {
                var part = ""
                index = text.index(after: index)
                var closed = false
                while index < text.endIndex {
                    let character = text[index]
                    index = text.index(after: index)
                    if character == "\"" {
                        if index < text.endIndex && text[index] == "\"" {
                            part.append("\"")
                            index = text.index(after: index)
                        } else {
                            closed = true
                            break
                        }
                    } else {
                        part.append(character)
                    }
                }
                guard closed else { throw fail("unterminated quote") }
                guard !part.isEmpty else { throw fail("empty quoted name") }
                parts.append(part)
                quotedFlags.append(true)
            } else {
                var part = ""
                while index < text.endIndex && text[index] != "." {
                    part.append(text[index])
                    index = text.index(after: index)
                }
                guard !part.isEmpty else { throw fail("empty part") }
                if part == "*" {
                    parts.append(part)
                } else {
                    let scalars = part.unicodeScalars
                    guard let first = scalars.first,
                          first == "_" || CharacterSetLite.isLetter(first),
                          scalars.allSatisfy({ $0 == "_" || $0 == "$" || CharacterSetLite.isLetter($0) || CharacterSetLite.isDigit($0) })
                    else { throw fail("\"\(part)\" needs double quotes") }
                    parts.append(part.lowercased())
                }
                quotedFlags.append(false)
            }
            if index == text.endIndex { break }
            guard text[index] == "." else { throw fail("unexpected character after a quoted name") }
            index = text.index(after: index)
        }
        guard parts.count == 2 else {
            throw fail(parts.count == 1 ? "the schema is missing" : "too many dots")
        }
        guard parts[0] != "*" || quotedFlags[0] else { throw fail("the schema cannot be *") }
        for part in parts where part.utf8.count > 63 {
            throw fail("\"\(part)\" is longer than 63 bytes")
        }
        if parts[1] == "*" && !quotedFlags[1] {
            self = .allTables(schema: parts[0])
        } else {
            self = .table(QualifiedName(schema: parts[0], name: parts[1]))
        }
    }

    public var description: String {
        switch self {
        case .table(let name): return name.sql
        case .allTables(let schema): return SQL.identifier(schema) + ".*"
        }
    }

    public func matches(_ name: QualifiedName) -> Bool {
        switch self {
        case .table(let table): return table == name
        case .allTables(let schema): return name.schema == schema
        }
    }
}

public struct TablePatternError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

enum CharacterSetLite {
    static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || scalar.value >= 0x80
    }
    static func isDigit(_ scalar: Unicode.Scalar) -> Bool { ("0"..."9").contains(scalar) }
}
