import Foundation
import Testing

/// Rules about the repository's own files, checked by reading them: the
/// version is written in one place, and the command-line tool's functions
/// stay short enough to read.
@Suite("Source rules")
struct SourceRulesTests {
    /// The checkout this test file belongs to (…/Tests/MMLiteCoreTests/SourceRulesTests.swift).
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let functionLineLimit = 80

    @Test("the version is written only in VERSION: no other hand-edited file spells it out")
    func versionInOneFile() throws {
        let version = try String(contentsOf: Self.root.appendingPathComponent("VERSION"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(version.split(separator: ".").count >= 2, "VERSION holds \"\(version)\", not a version")
        // bench/results/ is written by bench/run, not by hand.
        let files = try RepositoryFiles.list(Self.root).filter { $0 != "VERSION" && !$0.hasPrefix("bench/results/") }
        #expect(files.contains("Package.swift") && files.contains("Makefile"), "could not list the repository's files: \(files.prefix(5))")
        var hits: [String] = []
        for file in files {
            guard let data = FileManager.default.contents(atPath: Self.root.appendingPathComponent(file).path),
                  let text = String(data: data, encoding: .utf8) else { continue }  // gone, or not text
            for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where VersionMatch.contains(String(line), version) {
                hits.append("\(file):\(index + 1): \(line.trimmingCharacters(in: .whitespaces))")
            }
        }
        #expect(hits.isEmpty, "\"\(version)\" is written outside VERSION (read it from there instead):\n\(hits.joined(separator: "\n"))")
    }

    @Test("no function in Sources/MMLiteCLI is longer than 80 lines")
    func cliFunctionLength() throws {
        let folder = Self.root.appendingPathComponent("Sources/MMLiteCLI")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".swift") }.sorted()
        #expect(!files.isEmpty, "no Swift files in \(folder.path)")
        var long: [String] = []
        for file in files {
            let source = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            for function in SwiftFunctionScanner.functions(in: source) where function.lines > Self.functionLineLimit {
                long.append("\(function.qualifiedName) (Sources/MMLiteCLI/\(file):\(function.line)): \(function.lines) lines")
            }
        }
        #expect(long.isEmpty, "functions longer than \(Self.functionLineLimit) lines (declaration to closing brace):\n\(long.joined(separator: "\n"))")
    }

    // MARK: the helpers themselves

    /// A function of `lines` lines from its `func` line to its closing brace.
    static func function(named name: String, lines: Int) -> String {
        precondition(lines >= 2)
        return "func \(name)() {\n" + String(repeating: "    step()\n", count: lines - 2) + "}\n"
    }

    @Test("scanner: 81 lines is reported, 80 is not")
    func scannerLimit() {
        let source = "struct S {\n" + Self.function(named: "short", lines: 80) + Self.function(named: "long", lines: 81) + "}\n"
        let found = SwiftFunctionScanner.functions(in: source)
        #expect(found.map(\.qualifiedName) == ["S.short", "S.long"])
        #expect(found.map(\.lines) == [80, 81])
        #expect(found.map(\.line) == [2, 82])
        #expect(found.filter { $0.lines > Self.functionLineLimit }.map(\.name) == ["long"])
    }

    @Test("scanner: braces in strings, interpolations, multi-line and raw strings and comments are not code")
    func scannerSkipsLiterals() {
        let source = #"""
        enum E {
            func a() -> String {
                let s = "}}} \" }"
                let t = "\( ["{": "}"]["{"] ?? "}" ) }"
                let m = """
                    } \(1 + (2 * 3)) "{" }
                    \"""
                    """
                let r = #"}\(x) "}" "#
                let q = #"\#( "}" )"#
                // }
                /* } /* nested } */ { */
                return s + t + m + r + q
            }
            init?(x: Int) {
                self.init(y: { x }())
            }
            func b() {}
        }
        """#
        let found = SwiftFunctionScanner.functions(in: source)
        #expect(found.map(\.qualifiedName) == ["E.a", "E.init", "E.b"])
        #expect(found.map(\.line) == [2, 15, 18])
        #expect(found.map(\.lines) == [13, 3, 1])
    }

    @Test("scanner: requirements without a body, calls of init and `class func` are not mistaken for functions")
    func scannerDeclarationsOnly() {
        let source = """
        protocol P {
            func need(_ x: Int) throws -> Int
            init(value: Int)
        }
        final class C: P {
            class func make() -> C { C.init(value: 1) }
            required init(value: Int) {
                super.init()
            }
            func need(_ x: Int, f: () -> Void = { }) throws -> Int where Self: AnyObject {
                x
            }
        }
        extension C {
            func more() {
                func inner() {
                }
            }
        }
        """
        let found = SwiftFunctionScanner.functions(in: source)
        #expect(found.map(\.qualifiedName) == ["C.make", "C.init", "C.need", "C.more", "C.inner"])
        #expect(found.map(\.line) == [6, 7, 10, 15, 16])
        #expect(found.map(\.lines) == [1, 3, 3, 4, 2])
    }

    @Test("scanner on this repository's Swift: every body it finds ends at a brace lined up with its declaration")
    func scannerOnRealCode() throws {
        let files = try RepositoryFiles.list(Self.root).filter { $0.hasSuffix(".swift") }
        #expect(files.count > 20)
        var functions = 0, misread: [String] = []
        for file in files {
            guard let source = try? String(contentsOf: Self.root.appendingPathComponent(file), encoding: .utf8) else { continue }
            let lines = source.split(separator: "\n", omittingEmptySubsequences: false)
            func indentation(_ line: Int) -> Int { lines[line - 1].prefix { $0 == " " }.count }
            for function in SwiftFunctionScanner.functions(in: source) where function.lines > 1 {
                functions += 1
                let last = function.line + function.lines - 1
                if !lines[last - 1].trimmingCharacters(in: .whitespaces).hasPrefix("}") || indentation(last) != indentation(function.line) {
                    misread.append("\(file):\(function.line) \(function.qualifiedName) ends at line \(last)")
                }
            }
        }
        #expect(functions > 100)
        #expect(misread.isEmpty, "\(misread.joined(separator: "\n"))")
    }

    @Test("version match: the version alone, not inside a longer number")
    func versionMatch() {
        #expect(VersionMatch.contains("version 1.2.3 here", "1.2.3"))
        #expect(VersionMatch.contains("\"mmlite v1.2.3\"", "1.2.3"))
        #expect(VersionMatch.contains("mmlite--1.2.3.sql", "1.2.3"))
        #expect(!VersionMatch.contains("11.2.3", "1.2.3"))
        #expect(!VersionMatch.contains("1.2.34", "1.2.3"))
        #expect(!VersionMatch.contains("1.2.3.4", "1.2.3"))
        #expect(!VersionMatch.contains("0.1.2.3", "1.2.3"))
    }
}

/// Whether `line` holds `version` as a whole version number.
enum VersionMatch {
    static func contains(_ line: String, _ version: String) -> Bool {
        let bytes = Array(line.utf8), needle = Array(version.utf8)
        guard !needle.isEmpty, bytes.count >= needle.count else { return false }
        func isDigit(_ index: Int) -> Bool { index >= 0 && index < bytes.count && (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) }
        func isDot(_ index: Int) -> Bool { index >= 0 && index < bytes.count && bytes[index] == UInt8(ascii: ".") }
        for start in 0...(bytes.count - needle.count) where Array(bytes[start..<(start + needle.count)]) == needle {
            let end = start + needle.count
            let before = isDigit(start - 1) || (isDot(start - 1) && isDigit(start - 2))
            let after = isDigit(end) || (isDot(end) && isDigit(end + 1))
            if !before && !after { return true }
        }
        return false
    }
}

/// The repository's files, relative to its root: what git tracks plus new
/// files it does not ignore; without git, a walk that skips build output.
enum RepositoryFiles {
    static func list(_ root: URL) throws -> [String] {
        if let files = try? git(root), !files.isEmpty { return files }
        var files: [String] = []
        let skipped: Set<String> = [".git", ".pg-builds", ".swiftpm", "tmp"]
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isDirectoryKey]) else { return [] }
        for case let url as URL in walker {
            let name = url.lastPathComponent
            let isDirectory = (try? url.resourceValues(forKeys: [.isDirectoryKey]).isDirectory) ?? false
            if isDirectory {
                if skipped.contains(name) || name.hasPrefix(".build") { walker.skipDescendants() }
                continue
            }
            files.append(String(url.path.dropFirst(root.path.count + 1)))
        }
        return files
    }

    static func git(_ root: URL) throws -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["git", "-C", root.path, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\0").map(String.init)
    }
}

/// Finds the `func` and `init` declarations with a body in Swift source and
/// how many lines each spans, from the line of its `func`/`init` keyword to
/// the line of its closing brace (both included). Braces inside comments
/// (nested block comments too) and string literals (multi-line, raw,
/// interpolations included) are not counted. Good enough for this project's
/// code; it knows no regex literals.
enum SwiftFunctionScanner {
    struct Function: Equatable {
        var name: String
        /// `Type.name` for a member of a type or extension, else `name`.
        var qualifiedName: String
        /// 1-based line of the `func`/`init` keyword.
        var line: Int
        var lines: Int
    }

    static func functions(in source: String) -> [Function] {
        let code = blankingLiterals(Array(source.utf8))
        var lineOfOffset: [Int] = []
        lineOfOffset.reserveCapacity(code.count)
        var line = 1
        for byte in code {
            lineOfOffset.append(line)
            if byte == newline { line += 1 }
        }
        let words = identifiers(code)
        // Types (and extensions) with their brace ranges, to name members.
        var types: [(name: String, body: Range<Int>)] = []
        var found: [(offset: Int, function: Function)] = []
        for (index, word) in words.enumerated() {
            let next = index + 1 < words.count ? words[index + 1] : nil
            switch word.text {
            case "struct", "class", "enum", "extension", "actor", "protocol":
                guard let next, !declarationKeywords.contains(next.text), next.text != "func",
                      let body = body(code, after: next.end) else { continue }
                types.append((next.text, body))
            case "func", "init":
                if word.text == "init" && previousNonSpace(code, before: word.start) == UInt8(ascii: ".") { continue }
                let name = word.text == "init" ? "init" : (next?.text ?? "?")
                guard let body = body(code, after: word.end) else { continue }
                let first = lineOfOffset[word.start], last = lineOfOffset[body.upperBound - 1]
                found.append((word.start, Function(name: name, qualifiedName: name, line: first, lines: last - first + 1)))
            default:
                continue
            }
        }
        return found.map { offset, function in
            var function = function
            if let owner = types.filter({ $0.body.contains(offset) }).min(by: { $0.body.count < $1.body.count }) {
                function.qualifiedName = owner.name + "." + function.name
            }
            return function
        }
    }

    static let newline = UInt8(ascii: "\n")
    /// Words that end a declaration that had no body before them.
    static let declarationKeywords: Set<String> = [
        "func", "init", "deinit", "var", "let", "case", "struct", "class", "enum", "protocol",
        "extension", "actor", "typealias", "associatedtype", "subscript", "import",
    ]

    /// The range from the `{` that opens the body of the declaration whose
    /// name ends at `offset` to just after its matching `}`; nil when the
    /// declaration ends first (a protocol requirement).
    static func body(_ code: [UInt8], after offset: Int) -> Range<Int>? {
        var depth = 0  // () and []
        var index = offset
        while index < code.count {
            let byte = code[index]
            switch byte {
            case UInt8(ascii: "("), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: ")"), UInt8(ascii: "]"): depth -= 1
            case UInt8(ascii: "{") where depth == 0:
                var braces = 0
                for end in index..<code.count {
                    if code[end] == UInt8(ascii: "{") { braces += 1 }
                    if code[end] == UInt8(ascii: "}") { braces -= 1; if braces == 0 { return index..<(end + 1) } }
                }
                return nil
            case UInt8(ascii: "{"):
                // A closure in a default value: skip it whole.
                var braces = 0
                while index < code.count {
                    if code[index] == UInt8(ascii: "{") { braces += 1 }
                    if code[index] == UInt8(ascii: "}") { braces -= 1; if braces == 0 { break } }
                    index += 1
                }
            case UInt8(ascii: "}"), UInt8(ascii: ";"): if depth == 0 { return nil }
            default:
                if depth == 0, isIdentifierStart(byte), index == 0 || !isIdentifier(code[index - 1]) {
                    var end = index
                    while end < code.count && isIdentifier(code[end]) { end += 1 }
                    if declarationKeywords.contains(String(decoding: code[index..<end], as: UTF8.self)) { return nil }
                    index = end
                    continue
                }
            }
            index += 1
        }
        return nil
    }

    static func previousNonSpace(_ code: [UInt8], before offset: Int) -> UInt8? {
        var index = offset - 1
        while index >= 0 && [UInt8(ascii: " "), UInt8(ascii: "\t"), newline].contains(code[index]) { index -= 1 }
        return index >= 0 ? code[index] : nil
    }

    static func isIdentifierStart(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || byte == UInt8(ascii: "_") || byte >= 0x80
    }

    static func isIdentifier(_ byte: UInt8) -> Bool {
        isIdentifierStart(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    /// The identifiers (keywords included) of code whose literals are blanked.
    static func identifiers(_ code: [UInt8]) -> [(text: String, start: Int, end: Int)] {
        var words: [(text: String, start: Int, end: Int)] = []
        var index = 0
        while index < code.count {
            // A word starts at an identifier character not preceded by one (nor by `#`/`@`/`` ` ``: #if, @main, `init`).
            if isIdentifierStart(code[index]) {
                var end = index
                while end < code.count && isIdentifier(code[end]) { end += 1 }
                let previous = index > 0 ? code[index - 1] : 0
                if previous != UInt8(ascii: "#") && previous != UInt8(ascii: "@") && previous != UInt8(ascii: "`") {
                    words.append((String(decoding: code[index..<end], as: UTF8.self), index, end))
                }
                index = end
            } else {
                index += 1
            }
        }
        return words
    }

    private enum Context {
        case code
        /// Inside `\( … )` of a string: code, with the open parentheses counted.
        case interpolation(parens: Int)
        case string(hashes: Int, multiline: Bool)
    }

    /// `source` with every comment and the inside of every string literal
    /// replaced by spaces (line breaks kept, so offsets and lines stay);
    /// interpolated code stays, its own literals blanked too.
    static func blankingLiterals(_ source: [UInt8]) -> [UInt8] {
        var out = source
        var stack: [Context] = [.code]
        var index = 0
        func blank(_ range: Range<Int>) {
            for position in range where position < out.count && out[position] != newline { out[position] = UInt8(ascii: " ") }
        }
        func at(_ position: Int, _ text: String) -> Bool {
            let bytes = Array(text.utf8)
            return position + bytes.count <= source.count && Array(source[position..<(position + bytes.count)]) == bytes
        }
        func hashes(from position: Int) -> Int {
            var count = 0
            while position + count < source.count && source[position + count] == UInt8(ascii: "#") { count += 1 }
            return count
        }
        while index < source.count {
            let byte = source[index]
            switch stack.last! {
            case .code, .interpolation:
                if at(index, "//") {
                    var end = index
                    while end < source.count && source[end] != newline { end += 1 }
                    blank(index..<end)
                    index = end
                } else if at(index, "/*") {
                    var depth = 0, end = index
                    repeat {
                        if at(end, "/*") { depth += 1; end += 2 } else if at(end, "*/") { depth -= 1; end += 2 } else { end += 1 }
                    } while depth > 0 && end < source.count
                    blank(index..<end)
                    index = end
                } else if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "#") {
                    let count = hashes(from: index)
                    let quote = index + count
                    guard quote < source.count && source[quote] == UInt8(ascii: "\"") else { index += max(count, 1); continue }
                    let multiline = at(quote, "\"\"\"")
                    stack.append(.string(hashes: count, multiline: multiline))
                    index = quote + (multiline ? 3 : 1)
                } else if case .interpolation(let parens) = stack.last! {
                    if byte == UInt8(ascii: "(") {
                        stack[stack.count - 1] = .interpolation(parens: parens + 1)
                    } else if byte == UInt8(ascii: ")") {
                        if parens == 0 { stack.removeLast() } else { stack[stack.count - 1] = .interpolation(parens: parens - 1) }
                    }
                    index += 1
                } else {
                    index += 1
                }
            case .string(let count, let multiline):
                let delimiter = String(repeating: "#", count: count)
                if byte == UInt8(ascii: "\\") && at(index + 1, delimiter) {
                    let escaped = index + 1 + count
                    if escaped < source.count && source[escaped] == UInt8(ascii: "(") {
                        blank(index..<(escaped + 1))
                        stack.append(.interpolation(parens: 0))
                    } else {
                        blank(index..<(escaped + 1))  // keeps an escaped line break
                    }
                    index = escaped + 1
                } else if at(index, (multiline ? "\"\"\"" : "\"") + delimiter) {
                    stack.removeLast()
                    index += (multiline ? 3 : 1) + count
                } else {
                    blank(index..<(index + 1))
                    index += 1
                }
            }
        }
        return out
    }
}
