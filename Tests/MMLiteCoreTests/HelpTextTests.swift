import Foundation
import Testing

/// `--help` and the man page wrap each command's `discussion` themselves: a
/// line break inside a paragraph of the source shows as a short line
/// ("run" alone on a line). Paragraphs are written on one line each,
/// separated by an empty line.
@Suite("Help text")
struct HelpTextTests {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Each `discussion: """ ... """` block of `source`, as its lines.
    static func discussions(in source: String) -> [[Substring]] {
        var blocks: [[Substring]] = []
        var current: [Substring]?
        for line in source.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if current != nil {
                if trimmed.hasPrefix("\"\"\"") { blocks.append(current!); current = nil } else { current!.append(line) }
            } else if trimmed.hasSuffix("discussion: \"\"\"") {
                current = []
            }
        }
        return blocks
    }

    /// Lines of a block that continue the line before (no empty line between).
    static func wrapped(_ block: [Substring]) -> [Substring] {
        zip(block, block.dropFirst()).compactMap { previous, line in
            previous.trimmingCharacters(in: .whitespaces).isEmpty || line.trimmingCharacters(in: .whitespaces).isEmpty ? nil : line
        }
    }

    @Test("the check finds a hard-wrapped paragraph and accepts paragraphs on one line")
    func detector() {
        let bad = "x(discussion: \"\"\"\n    One line\n    wrapped here.\n    \"\"\")"
        let good = "x(discussion: \"\"\"\n    One paragraph.\n\n    Exit code: 0.\n    \"\"\")"
        #expect(Self.wrapped(Self.discussions(in: bad)[0]).count == 1)
        #expect(Self.discussions(in: good).count == 1)
        #expect(Self.wrapped(Self.discussions(in: good)[0]).isEmpty)
    }

    @Test("every command's discussion is written as unwrapped paragraphs")
    func unwrapped() throws {
        let folder = Self.root.appendingPathComponent("Sources/MMLiteCLI")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".swift") }.sorted()
        var found = 0, problems: [String] = []
        for file in files {
            let source = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            for block in Self.discussions(in: source) {
                found += 1
                problems += Self.wrapped(block).map { "\(file): \($0.trimmingCharacters(in: .whitespaces))" }
            }
        }
        #expect(found >= 10, "found only \(found) discussions in \(folder.path)")
        #expect(problems.isEmpty, "hard-wrapped lines in a discussion (write each paragraph on one line):\n\(problems.joined(separator: "\n"))")
    }
}
