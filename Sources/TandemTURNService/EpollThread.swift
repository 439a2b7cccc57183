import CDatagramIO
import Foundation
import NIOCore
import Synchronization

/// A thread that waits on epoll for its sockets, runs the tasks other threads post to it and keeps a
/// one-second tick. Every callback runs on that thread, so what they touch needs no lock.
final class EpollThread: @unchecked Sendable {
    struct Callbacks: Sendable {
        /// A watched socket can be read; the token is the one it was watched with.
        var readable: @Sendable (UInt64) -> Void
        /// After each wake-up's sockets and tasks: the moment to send what they queued.
        var roundEnd: @Sendable () -> Void
        var tick: @Sendable () -> Void
        /// On the thread, after its last round: close what is left.
        var stopped: @Sendable () -> Void
    }

    private static let wakeToken = UInt64.max
    let epoll: Int32
    private let wake: Int32
    private let queue = Mutex<(tasks: [@Sendable () -> Void], signalled: Bool)>(([], false))
    private var stopping: CheckedContinuation<Void, Never>?

    init() throws(TURNSetupError) {
        epoll = tandem_epoll_create()
        guard epoll >= 0 else { throw TURNSetupError("epoll_create1 failed: errno \(-epoll)") }
        wake = tandem_eventfd_create()
        guard wake >= 0, tandem_epoll_add(epoll, wake, Self.wakeToken) == 0 else {
            close(epoll)
            throw TURNSetupError("eventfd failed: errno \(-wake)")
        }
    }

    func start(name: String, _ callbacks: Callbacks) {
        let thread = Thread { [self] in run(callbacks) }
        thread.name = name
        thread.start()
    }

    /// Runs `task` on the thread, after the tasks posted before it.
    func execute(_ task: @escaping @Sendable () -> Void) {
        let signal = queue.withLock { q in
            q.tasks.append(task)
            defer { q.signalled = true }
            return !q.signalled
        }
        if signal { tandem_eventfd_signal(wake) }
    }

    /// Ends the loop after the tasks already posted; returns once the thread has called `stopped`.
    func stop() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            execute { [self] in stopping = continuation }
        }
    }

    func watch(_ fd: Int32, token: UInt64) -> Bool { tandem_epoll_add(epoll, fd, token) == 0 }

    func unwatch(_ fd: Int32) { _ = tandem_epoll_remove(epoll, fd) }

    private func run(_ callbacks: Callbacks) {
        var tokens = [UInt64](repeating: 0, count: 64)
        var nextTick = NIODeadline.now() + .seconds(1)
        while stopping == nil {
            let wait = nextTick - NIODeadline.now()
            let timeout = max(0, Int32(clamping: (wait.nanoseconds + 999_999) / 1_000_000))
            let count = tokens.withUnsafeMutableBufferPointer { tandem_epoll_wait(epoll, $0.baseAddress, 64, timeout) }
            for i in 0..<max(0, Int(count)) {
                if tokens[i] == Self.wakeToken {
                    tandem_eventfd_drain(wake)
                    runTasks()
                } else {
                    callbacks.readable(tokens[i])
                }
            }
            callbacks.roundEnd()
            if NIODeadline.now() >= nextTick {
                callbacks.tick()
                callbacks.roundEnd()
                nextTick = NIODeadline.now() + .seconds(1)
            }
        }
        callbacks.stopped()
        close(wake)
        close(epoll)
        stopping?.resume()
    }

    private func runTasks() {
        let tasks = queue.withLock { q in
            q.signalled = false
            defer { q.tasks = [] }
            return q.tasks
        }
        for task in tasks { task() }
    }
}
