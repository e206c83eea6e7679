/// Splits a migration script into its statements, the way psql does: at
/// semicolons outside string literals ('...', E'...'), quoted identifiers,
/// dollar-quoted bodies ($$...$$, $tag$...$tag$) and comments (--, nested
/// /* */). It reads no meaning into the statements: PostgreSQL decides
/// what each one does (`mmlite ddl` asks it, statement by statement).
public enum SQLScript {
    public static func statements(_ script: String) -> [String] {
        let chars = Array(script.unicodeScalars)
        var statements: [String] = []
        var current = String.UnicodeScalarView()
        var index = 0
        func flush() {
            let text = String(current).trimmingCharacters(in: .whitespacesAndNewlines)
            if !text.isEmpty && !isOnlyComments(text) { statements.append(text) }
            current = String.UnicodeScalarView()
        }
        func peek(_ offset: Int) -> Unicode.Scalar? { index + offset < chars.count ? chars[index + offset] : nil }
        while index < chars.count {
            let c = chars[index]
            if c == ";" {
                flush()
                index += 1
                continue
            }
            let start = index
            if c == "'" || c == "\"" {
                index = skipQuoted(chars, from: index, quote: c)
            } else if c == "-" && peek(1) == "-" {
                while index < chars.count && chars[index] != "\n" { index += 1 }
            } else if c == "/" && peek(1) == "*" {
                index = skipBlockComment(chars, from: index)
            } else if c == "$", let tag = dollarTag(chars, at: index), !(index > 0 && isIdentifierPart(chars[index - 1])) {
                index = skipDollarQuoted(chars, from: index, tag: tag)
            } else {
                index += 1
            }
            current.append(contentsOf: chars[start..<index])
        }
        flush()
        return statements
    }

    /// Past the closing quote ('' and "" stay inside; E'' strings also skip backslash escapes).
    static func skipQuoted(_ chars: [Unicode.Scalar], from start: Int, quote: Unicode.Scalar) -> Int {
        let escapes = quote == "'" && start > 0 && (chars[start - 1] == "E" || chars[start - 1] == "e")
            && !(start > 1 && isIdentifierPart(chars[start - 2]))
        var index = start + 1
        while index < chars.count {
            if escapes && chars[index] == "\\" { index += 2; continue }
            if chars[index] == quote {
                if index + 1 < chars.count && chars[index + 1] == quote { index += 2; continue }
                return index + 1
            }
            index += 1
        }
        return chars.count
    }

    static func skipBlockComment(_ chars: [Unicode.Scalar], from start: Int) -> Int {
        var depth = 0
        var index = start
        while index < chars.count {
            if chars[index] == "/" && index + 1 < chars.count && chars[index + 1] == "*" { depth += 1; index += 2; continue }
            if chars[index] == "*" && index + 1 < chars.count && chars[index + 1] == "/" {
                depth -= 1
                index += 2
                if depth == 0 { return index }
                continue
            }
            index += 1
        }
        return chars.count
    }

    /// "$tag$" starting at `index`, if one does.
    static func dollarTag(_ chars: [Unicode.Scalar], at index: Int) -> [Unicode.Scalar]? {
        var end = index + 1
        while end < chars.count && chars[end] != "$" {
            guard isIdentifierPart(chars[end]), !(end == index + 1 && chars[end].properties.numericType != nil) else { return nil }
            end += 1
        }
        guard end < chars.count else { return nil }
        return Array(chars[index...end])
    }

    static func skipDollarQuoted(_ chars: [Unicode.Scalar], from start: Int, tag: [Unicode.Scalar]) -> Int {
        var index = start + tag.count
        while index + tag.count <= chars.count {
            if Array(chars[index..<index + tag.count]) == tag { return index + tag.count }
            index += 1
        }
        return chars.count
    }

    static func isIdentifierPart(_ c: Unicode.Scalar) -> Bool {
        c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil
    }

    static func isOnlyComments(_ text: String) -> Bool {
        var rest = Substring(text)
        while true {
            rest = rest.drop { $0.isWhitespace }
            if rest.hasPrefix("--") {
                rest = rest.drop { $0 != "\n" }
            } else if rest.hasPrefix("/*") {
                let chars = Array(String(rest).unicodeScalars)
                let end = skipBlockComment(chars, from: 0)
                rest = Substring(String(String.UnicodeScalarView(chars[end...])))
            } else {
                return rest.isEmpty
            }
        }
    }
}
