// The decision of the native apply trigger (Sources/CMMLite/mmlite_apply.c):
// apply an arriving change directly, or hand it to the generated SQL apply
// function. Pure logic over plain values, called from C after the row
// lookups and before any write; it calls nothing in PostgreSQL.

import CMMLite

/// An arriving change's op, from its code (include/mmlite_contract.h).
enum ChangeOp {
    case insert, update, delete

    init?(code: Int32) {
        switch code {
        case MMLITE_OP_INSERT: self = .insert
        case MMLITE_OP_UPDATE: self = .update
        case MMLITE_OP_DELETE: self = .delete
        default: return nil
        }
    }
}

enum ApplyPlan {
    /// Let the SQL apply function decide (and log) this change.
    case sql
    /// Write the change's version and row image directly.
    case direct

    /// The answer's code for C (include/mmlite_contract.h).
    var code: Int32 { self == .direct ? MMLITE_PLAN_APPLY : MMLITE_PLAN_SQL }
}

/// The direct path takes exactly the changes that apply under every policy
/// without being a conflict (docs/conflicts.md, "Semantics"):
/// - an update or delete when the user row exists and the change was written
///   on top of this node's version of it (its `prev` is the local version),
///   or this node holds no version for the key at all (a row that predates
///   opting in);
/// - an insert of a key this node holds neither a row nor a version of (the
///   C side learns both from speculative insertions of the row, then of the
///   version, and takes them back unseen when the plan says SQL).
/// Such a change applies and logs nothing in the SQL function too. Anything
/// else (no user row to update, a tombstone, a concurrent version) may be a
/// conflict: SQL decides.
func applyPlan(op: ChangeOp?, userRowFound: Bool, versionFound: Bool, versionIsTombstone: Bool, builtOnLocalVersion: Bool) -> ApplyPlan {
    switch op {
    case nil:
        return .sql
    case .insert:
        return userRowFound || versionFound ? .sql : .direct
    case .update, .delete:
        guard userRowFound else { return .sql }
        if !versionFound { return .direct }
        return !versionIsTombstone && builtOnLocalVersion ? .direct : .sql
    }
}

@_cdecl("mmlite_swift_apply_plan")
func mmliteSwiftApplyPlan(_ op: Int32, _ userRowFound: Bool, _ versionFound: Bool,
                          _ versionIsTombstone: Bool, _ builtOnLocalVersion: Bool) -> Int32 {
    applyPlan(op: ChangeOp(code: op), userRowFound: userRowFound, versionFound: versionFound,
              versionIsTombstone: versionIsTombstone, builtOnLocalVersion: builtOnLocalVersion).code
}
