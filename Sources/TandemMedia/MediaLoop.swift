import TandemMediaCore
import CNice
import Glibc

/// One GLib main-loop thread. libnice, OpenSSL and libsrtp objects of a relay leg are touched on their
/// loop's thread only; everything else posts work here. Both legs of a relayed pair share a loop, so a
/// packet never changes thread.
public final class MediaLoop: @unchecked Sendable {
    let context: OpaquePointer
    private let loop: OpaquePointer

    public init(name: String) {
        context = g_main_context_new()
        loop = g_main_loop_new(context, 0)
        let owner = Unmanaged.passRetained(self).toOpaque()
        let thread = g_thread_new(name, { data in
            let me = Unmanaged<MediaLoop>.fromOpaque(data!).takeRetainedValue()
            g_main_context_push_thread_default(me.context)
            g_main_loop_run(me.loop)
            g_main_context_pop_thread_default(me.context)
            return nil
        }, owner)
        g_thread_unref(thread)
    }

    /// True on this loop's thread.
    public var isCurrent: Bool { g_main_context_is_owner(context) != 0 }

    /// Runs `job` on the loop thread, after what was posted before. Always through an idle source, never
    /// inline, so a caller on the loop never re-enters itself.
    public func execute(_ job: @escaping @Sendable () -> Void) {
        guard let source = g_idle_source_new() else { return }
        // Idle sources default to the lowest priority, which a loop busy with packets (libnice's sockets
        // are at the default) would never reach: control work must not starve behind media.
        g_source_set_priority(source, 0)  // G_PRIORITY_DEFAULT
        attach(source, Job(job))
        g_source_unref(source)
    }

    /// Runs `job` on the loop thread after `milliseconds`; the timer can be cancelled from the loop thread.
    @discardableResult
    public func schedule(afterMs milliseconds: Int, _ job: @escaping @Sendable () -> Void) -> LoopTimer {
        let source = g_timeout_source_new(UInt32(max(0, milliseconds)))!
        attach(source, Job(job))
        return LoopTimer(source: source)
    }

    private func attach(_ source: UnsafeMutablePointer<GSource>, _ job: Job) {
        g_source_set_callback(
            source,
            { data in
                Unmanaged<Job>.fromOpaque(data!).takeUnretainedValue().body()
                return 0  // G_SOURCE_REMOVE
            }, Unmanaged.passRetained(job).toOpaque(),
            { data in Unmanaged<Job>.fromOpaque(data!).release() })
        g_source_attach(source, context)
    }

    /// CPU time this loop's thread has used, in microseconds; call it on the loop.
    public static func threadCPUMicroseconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) * 1e6 + Double(ts.tv_nsec) / 1e3
    }

    /// Stops the loop after the work posted before; later work is dropped. (A quit sent before the loop
    /// thread started running would be lost, so it is posted too.)
    public func shutdown() {
        let loop = UncheckedSendable(loop)
        execute { g_main_loop_quit(loop.value) }
    }

    private final class Job {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
}

/// A pending `MediaLoop.schedule`; `cancel()` on the loop thread.
public final class LoopTimer: @unchecked Sendable {
    private var source: UnsafeMutablePointer<GSource>?

    init(source: UnsafeMutablePointer<GSource>) {
        self.source = source
    }

    public func cancel() {
        guard let source else { return }
        g_source_destroy(source)
        g_source_unref(source)
        self.source = nil
    }

    deinit {
        if let source { g_source_unref(source) }
    }
}

/// A fixed pool of loops, about one per core (Janus learned that a loop per handle fails at hundreds of
/// handles). A session always lands on the same loop.
public final class MediaLoopPool: Sendable {
    public let loops: [MediaLoop]

    public init(threads: Int) {
        loops = (0..<max(1, threads)).map { MediaLoop(name: "tandem-media-\($0)") }
    }

    /// The loop for `key` (a session id): FNV-1a, so it is stable across runs.
    public func loop(for key: String) -> MediaLoop {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        return loops[Int(hash % UInt64(loops.count))]
    }

    public func shutdown() {
        for loop in loops { loop.shutdown() }
    }
}

/// A value handed to another thread's job when the handing-over itself is the synchronisation: a loop
/// handle, or objects a later loop turn should release.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
