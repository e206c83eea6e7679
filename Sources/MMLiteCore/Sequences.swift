/// Keys that never collide (docs/sequences.md): under `sequences =
/// "node-offset"` every node's sequences hand out their own residue class
/// modulo `sequence_step`, at the node's offset. Offsets are recorded on
/// every node (`mmlite.sequence_offsets`), never derived from the file's
/// order, and never handed out twice: a parted node's offset stays retired.

/// One row of `mmlite.sequence_offsets`.
public struct SequenceOffset: Sendable, Equatable, Hashable, Comparable {
    public var node: String
    /// 1 ... sequence_step; values the node draws are ≡ offset (mod step).
    public var offset: Int
    /// The node parted: the offset stays taken.
    public var retired: Bool

    public init(node: String, offset: Int, retired: Bool = false) {
        self.node = node
        self.offset = offset
        self.retired = retired
    }

    public static func < (a: SequenceOffset, b: SequenceOffset) -> Bool { a.offset < b.offset }
}

/// A sequence feeding a column of a mesh table, as observed on one node.
public struct MeshSequence: Sendable, Equatable {
    public var table: QualifiedName
    public var column: String
    /// `format_type` of the column: its type bounds the values as much as the sequence does.
    public var columnType: String
    /// The column is (part of) the primary key: a collision stops replication.
    public var isKey: Bool
    public var sequence: QualifiedName
    public var increment: Int64
    public var start: Int64
    public var minValue: Int64
    public var maxValue: Int64
    /// The last value handed out; nil before the first nextval (or when not readable).
    public var lastValue: Int64?
    /// The largest value in the column; nil when empty or not read (converted sequences).
    public var columnMax: Int64?

    public init(table: QualifiedName, column: String, columnType: String = "bigint", isKey: Bool = true, sequence: QualifiedName,
                increment: Int64 = 1, start: Int64 = 1, minValue: Int64 = 1, maxValue: Int64 = Int64.max,
                lastValue: Int64? = nil, columnMax: Int64? = nil) {
        self.table = table
        self.column = column
        self.columnType = columnType
        self.isKey = isKey
        self.sequence = sequence
        self.increment = increment
        self.start = start
        self.minValue = minValue
        self.maxValue = maxValue
        self.lastValue = lastValue
        self.columnMax = columnMax
    }

    public var label: String { "\(table.sql).\(SQL.identifier(column))" }

    /// The largest value the column can take from this sequence.
    public var limit: Int64 {
        switch columnType {
        case "smallint": return min(maxValue, Int64(Int16.max))
        case "integer": return min(maxValue, Int64(Int32.max))
        default: return maxValue
        }
    }

    /// Whether this node's sequence already draws from `offset`'s class modulo `step`.
    public func draws(offset: Int, step: Int) -> Bool {
        let step = Int64(step)
        func inClass(_ value: Int64) -> Bool { residue(value, step) == residue(Int64(offset), step) }
        return increment == step && inClass(start) && (lastValue.map(inClass) ?? true)
    }

    /// The largest value this node has handed out or holds (start - 1 when none).
    public var highest: Int64 { [start - 1, lastValue, columnMax].compactMap { $0 }.max() ?? 0 }
}

func residue(_ value: Int64, _ modulus: Int64) -> Int64 { ((value % modulus) + modulus) % modulus }

/// A sequence that `node-offset` cannot convert, and why.
public struct SequenceProblem: Sendable, Equatable {
    public var node: String
    public var sequence: MeshSequence
    public var message: String
    public var fix: String
}

/// Decides offsets and conversions from what the nodes hold. Pure.
public struct SequencePlanner: Sendable {
    public var config: MeshConfig
    public init(config: MeshConfig) { self.config = config }

    var step: Int { config.mesh.sequenceStep }

    /// Every node's `mmlite.sequence_offsets` for this mesh, merged: an offset
    /// any node records is taken, retired where any node says so. Refuses
    /// when two nodes record one offset for different nodes, or one node
    /// holds two offsets in use.
    public static func recorded(_ states: [String: NodeState]) throws -> [SequenceOffset] {
        var byOffset: [Int: SequenceOffset] = [:]
        for name in states.keys.sorted() {
            for entry in states[name]?.sequenceOffsets ?? [] {
                if let known = byOffset[entry.offset] {
                    guard known.node == entry.node else {
                        throw PlanError(message: "sequence offset \(entry.offset) is recorded for \(known.node) on one node and for \(entry.node) on \(name) (mmlite.sequence_offsets); two apply or join runs at once? Keep the right row on every node, delete the other, then run apply again")
                    }
                    byOffset[entry.offset]?.retired = known.retired || entry.retired
                } else {
                    byOffset[entry.offset] = entry
                }
            }
        }
        let entries = byOffset.values.sorted()
        let inUse = Dictionary(grouping: entries.filter { !$0.retired }, by: \.node)
        if let (node, twice) = inUse.first(where: { $0.value.count > 1 }) {
            throw PlanError(message: "\(node) holds sequence offsets \(twice.map { String($0.offset) }.joined(separator: " and ")) (mmlite.sequence_offsets); keep one, mark the other retired on every node, then run apply again")
        }
        return entries
    }

    /// The recorded offsets with one assigned to each of `nodes` that has
    /// none in use: the lowest offset never handed out.
    public func assign(_ nodes: [String], recorded: [SequenceOffset]) throws -> [SequenceOffset] {
        if let highest = recorded.max(), highest.offset > step {
            throw PlanError(message: "sequence_step = \(step) is below offset \(highest.offset), recorded for \(highest.node)\(highest.retired ? " (retired)" : ""): two offsets would share values. Set [mesh] sequence_step to at least \(highest.offset)")
        }
        var entries = recorded
        for node in nodes where !entries.contains(where: { $0.node == node && !$0.retired }) {
            let taken = Set(entries.map(\.offset))
            guard let free = (1...step).first(where: { !taken.contains($0) }) else {
                throw PlanError(message: "no sequence offset is left for \(node): all \(step) of sequence_step = \(step) were handed out (parted nodes keep theirs). Raise [mesh] sequence_step (apply then converts every sequence to the new step)")
            }
            entries.append(SequenceOffset(node: node, offset: free))
        }
        return entries.sorted()
    }

    /// The offset of `node` in `entries`.
    public static func offset(of node: String, in entries: [SequenceOffset]) -> Int? {
        entries.first { $0.node == node && !$0.retired }?.offset
    }

    /// The first value above everything any node holds, in `offset`'s class.
    public func restart(after highest: Int64, offset: Int) -> Int64? {
        let step = Int64(step)
        let (next, overflow) = highest.addingReportingOverflow(1)
        guard !overflow else { return nil }
        let (value, overflow2) = next.addingReportingOverflow(residue(Int64(offset) - next, step))
        return overflow2 ? nil : value
    }

    /// A conversion starts above the column's largest value on any node;
    /// reading it may scan the table, so only where a conversion may follow.
    public func needsColumnMaximum(_ sequence: MeshSequence) -> Bool {
        config.mesh.sequences == .nodeOffset && sequence.increment != Int64(step)
    }

    /// The largest value each sequence (by name) holds on any of `nodes`.
    public static func highest(_ states: [String: NodeState], nodes: [String]) -> [QualifiedName: Int64] {
        var result: [QualifiedName: Int64] = [:]
        for node in nodes { for sequence in states[node]?.sequences ?? [] {
            result[sequence.sequence] = max(result[sequence.sequence] ?? Int64.min, sequence.highest)
        } }
        return result
    }

    /// A conversion of one sequence on one node, or why there is none.
    public enum Conversion: Sendable, Equatable {
        case convert(restart: Int64, columns: [String])
        case refused(SequenceProblem)
    }

    /// What `node-offset` does with each sequence of `node` that does not
    /// yet draw from the node's class (one entry per sequence, by name).
    public func conversions(node: String, offset: Int, states: [String: NodeState], nodes: [String]) -> [(MeshSequence, Conversion)] {
        let highest = Self.highest(states, nodes: nodes)
        var seen = Set<QualifiedName>()
        var result: [(MeshSequence, Conversion)] = []
        let sequences = states[node]?.sequences ?? []
        for sequence in sequences where !seen.contains(sequence.sequence) {
            seen.insert(sequence.sequence)
            guard !sequence.draws(offset: offset, step: step) else { continue }
            let columns = sequences.filter { $0.sequence == sequence.sequence }
            let limit = columns.map(\.limit).min() ?? sequence.limit
            func refuse(_ message: String, _ fix: String) -> (MeshSequence, Conversion) {
                (sequence, .refused(SequenceProblem(node: node, sequence: sequence, message: message, fix: fix)))
            }
            if sequence.increment < 0 {
                result.append(refuse("\(sequence.label) takes values from \(sequence.sequence.sql), which counts down (INCREMENT BY \(sequence.increment)); node-offset converts only ascending sequences",
                                     "ALTER SEQUENCE \(sequence.sequence.sql) INCREMENT BY 1 (on every node), or set [mesh] sequences = \"none\" and give each node its own values"))
                continue
            }
            guard let restart = restart(after: max(highest[sequence.sequence] ?? 0, sequence.minValue - 1), offset: offset), restart <= limit else {
                result.append(refuse("\(sequence.label): no value above the largest one on any node (\(highest[sequence.sequence] ?? 0)) fits \(sequence.sequence.sql) (at most \(limit)) in \(node)'s class",
                                     "widen the column and the sequence to bigint through `mmlite ddl` (ALTER TABLE \(sequence.table.sql) ALTER COLUMN \(SQL.identifier(sequence.column)) TYPE bigint; ALTER SEQUENCE \(sequence.sequence.sql) AS bigint)"))
                continue
            }
            result.append((sequence, .convert(restart: restart, columns: columns.map(\.label))))
        }
        return result
    }

    /// The steps that record offsets (and the time-ordered ID functions)
    /// on each of `members`, and, under node-offset, convert their
    /// sequences. Sequences that cannot be converted are left to the checks.
    public func steps(states: [String: NodeState], members: [String]) throws -> [Step] {
        let entries = try assign(members, recorded: try Self.recorded(states))
        var record: [Step] = []
        var convert: [Step] = []
        for node in members {
            guard let state = states[node], let offset = Self.offset(of: node, in: entries) else { continue }
            if Set(state.sequenceOffsets ?? []) != Set(entries) || state.nodeOffset != offset {
                record.append(Step(node: node, action: .recordSequenceOffsets(mesh: config.mesh.name, offsets: entries, own: offset)))
            }
            guard config.mesh.sequences == .nodeOffset else { continue }
            for (sequence, conversion) in conversions(node: node, offset: offset, states: states, nodes: members) {
                guard case .convert(let restart, let columns) = conversion else { continue }
                convert.append(Step(node: node, action: .convertSequence(sequence: sequence.sequence, columns: columns, step: step,
                                                                         offset: offset, restart: restart)))
            }
        }
        return record + convert
    }
}

/// The SQL of sequence offsets and time-ordered IDs.
public enum SequenceSQL {
    /// Milliseconds from the Unix epoch to 2026-01-01 00:00 UTC: time-ordered IDs count from there (41 bits: until 2095).
    public static let idEpochMilliseconds: Int64 = 1_767_225_600_000

    /// The advisory lock key under which `time_ordered_id` moves its tick sequence forward.
    public static let idLockKey: Int64 = 0x6d6d_6c69_7465_6964 // "mmliteid"

    /// Records `offsets` (merged: a retired mark is never undone) and
    /// (re)creates the functions that know this node's offset.
    public static func recordOffsets(mesh: String, offsets: [SequenceOffset], own: Int) -> String {
        let rows = offsets.map { "(\(SQL.literal(mesh)), \(SQL.literal($0.node)), \($0.offset), \($0.retired))" }.joined(separator: ", ")
        return """
            CREATE SCHEMA IF NOT EXISTS mmlite;
            CREATE TABLE IF NOT EXISTS mmlite.sequence_offsets (
                mesh text NOT NULL,
                node text NOT NULL,
                node_offset integer NOT NULL,
                retired boolean NOT NULL DEFAULT false,
                recorded_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (mesh, node_offset));
            INSERT INTO mmlite.sequence_offsets (mesh, node, node_offset, retired) VALUES \(rows)
                ON CONFLICT (mesh, node_offset) DO UPDATE SET retired = mmlite.sequence_offsets.retired OR excluded.retired;
            CREATE SEQUENCE IF NOT EXISTS mmlite.time_ordered_id_ticks;
            CREATE OR REPLACE FUNCTION mmlite.node_offset() RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT \(own)';
            COMMENT ON FUNCTION mmlite.node_offset() IS \(SQL.literal("this node's sequence offset in mesh \(mesh) (mmlite.sequence_offsets)"));
            \(timeOrderedID(offset: own))
            """
    }

    /// A 64-bit ID: milliseconds since 2026-01-01 (41 bits), the node's
    /// offset (10 bits), a counter (12 bits). The per-node tick sequence
    /// makes IDs unique and increasing on the node; when it lags the clock
    /// by more than 16 ms (after a quiet spell) it is moved forward under an
    /// advisory lock, so no two sessions move it and it never goes back.
    /// SECURITY DEFINER: callers need USAGE on schema mmlite only, not rights on the tick sequence.
    static func timeOrderedID(offset: Int) -> String {
        """
        CREATE OR REPLACE FUNCTION mmlite.time_ordered_id() RETURNS bigint LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
            SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $mmlite$
        DECLARE
            tick bigint := nextval('mmlite.time_ordered_id_ticks');
            clock bigint := (floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - \(idEpochMilliseconds)) << 12;
        BEGIN
            IF tick < clock - 65536 THEN
                PERFORM pg_advisory_lock(\(idLockKey));
                BEGIN
                    tick := nextval('mmlite.time_ordered_id_ticks');
                    IF tick < clock THEN
                        PERFORM setval('mmlite.time_ordered_id_ticks', clock);
                        tick := clock;
                    END IF;
                EXCEPTION WHEN OTHERS OR query_canceled THEN
                    PERFORM pg_advisory_unlock(\(idLockKey));
                    RAISE;
                END;
                PERFORM pg_advisory_unlock(\(idLockKey));
            END IF;
            RETURN ((tick >> 12) << 22) | (\(offset % 1024)::bigint << 12) | (tick & 4095);
        END
        $mmlite$;
        COMMENT ON FUNCTION mmlite.time_ordered_id() IS 'a mesh-unique, time-ordered 64-bit ID (docs/sequences.md)';
        CREATE OR REPLACE FUNCTION mmlite.time_ordered_id_parts(id bigint, OUT created timestamptz, OUT node_offset integer, OUT counter integer)
            LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $mmlite$
            SELECT to_timestamp(((id >> 22) + \(idEpochMilliseconds)) / 1000.0), ((id >> 12) & 1023)::integer, (id & 4095)::integer
        $mmlite$;
        """
    }

    /// Gives `sequence` the node's class: values restart, rise by `step`.
    public static func convert(_ sequence: QualifiedName, step: Int, restart: Int64) -> String {
        "ALTER SEQUENCE \(sequence.sql) INCREMENT BY \(step) START WITH \(restart) RESTART WITH \(restart)"
    }

    /// Marks a parted node's offset retired (part): it is never handed out again.
    public static func retire(mesh: String, node: String) -> String {
        """
        DO $mmlite$ BEGIN
            IF to_regclass('mmlite.sequence_offsets') IS NOT NULL THEN
                UPDATE mmlite.sequence_offsets SET retired = true WHERE mesh = \(SQL.literal(mesh)) AND node = \(SQL.literal(node)) AND NOT retired;
            END IF;
        END $mmlite$
        """
    }
}

extension SequencePlanner {
    /// What `status` reports under node-offset: a member's sequence that does
    /// not draw from the member's own offset hands out values another node
    /// may hand out too (a sequence added since the last apply, or altered by hand).
    public func problems(states: [String: NodeState], members: [String]) -> [DriftProblem] {
        guard config.mesh.sequences == .nodeOffset else { return [] }
        var problems: [DriftProblem] = []
        for node in members {
            guard let state = states[node] else { continue }
            let offset = state.sequenceOffsets.flatMap { Self.offset(of: node, in: $0) }
            var seen = Set<QualifiedName>()
            for sequence in state.sequences where !seen.contains(sequence.sequence) {
                seen.insert(sequence.sequence)
                if let offset, sequence.draws(offset: offset, step: step) { continue }
                let why = offset.map { "does not draw from \(node)'s offset \($0) of \(step)" } ?? "has no sequence offset on \(node) yet"
                problems.append(DriftProblem(table: sequence.table, node: node, kind: "sequence", health: .warning,
                                             message: "\(node): \(sequence.label) takes values from \(sequence.sequence.sql), which \(why): inserts on two nodes may collide",
                                             fix: "mmlite apply (converts it; docs/sequences.md)"))
            }
        }
        return problems
    }
}
