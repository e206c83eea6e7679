// The Swift half of mmlite.so.
//
// PostgreSQL never calls into this file directly except through C trampolines
// (Sources/CMMLite/mmlite_module.c) or for callbacks that only compute. Rules
// (docs/architecture.md): nothing here may raise a PostgreSQL error, trap, start
// a thread or keep palloc'd memory.

import CMMLite

/// Fills `callbacks` with the running server's own pgoutput callbacks and
/// replaces the origin filter. Everything else (protocol versions,
/// streaming, two-phase, binary, row filters, column lists, errors for bad
/// options) is that server's pgoutput, unchanged; the C trampoline then wraps
/// its startup, change and message callbacks for change messages
/// (mmlite_change_message.c).
@_cdecl("mmlite_swift_plugin_init")
func mmliteSwiftPluginInit(
    _ callbacks: UnsafeMutablePointer<OutputPluginCallbacks>?,
    _ error: UnsafeMutablePointer<MMLitePGError?>?
) -> Bool {
    guard let callbacks, let error else { return false }
    guard mmlite_guarded_pgoutput_init(callbacks, error) else { return false }
    callbacks.pointee.filter_by_origin_cb = mmliteFilterByOrigin
    return true
}

/// The one difference from pgoutput: a change that carries a replication
/// origin was itself replicated here, so it is not sent on. Only changes made
/// on this node travel, which is what makes a full mesh loop-free (an origin
/// names the immediate upstream, so "skip the receiver's origin" would still
/// loop on a ring of three).
///
/// Called by the decoder for every change and at every commit: pure compute,
/// no PostgreSQL calls, so it may be Swift directly.
let mmliteFilterByOrigin: LogicalDecodeFilterByOriginCB = { _, originID in
    originID != mmlite_invalid_origin()
}
