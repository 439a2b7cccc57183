import NIOConcurrencyHelpers

/// One signaling socket as the rest of the server sees it: a bounded queue of frames that the socket's
/// writer drains. Anyone may enqueue without waiting; a socket that stops reading is closed (4429 is
/// not used for that: it is told 1008 and may resume) rather than letting its queue grow without bound.
final class Connection: Sendable {
    enum Next {
        case frames([[UInt8]])
        case close(code: UInt16, reason: String)
        case finished
    }

    private struct State {
        var frames: [[UInt8]] = []
        var close: (code: UInt16, reason: String)?
        var finished = false
        var waiter: CheckedContinuation<Void, Never>?
        var joined = false
    }

    let id: UInt64
    /// The peer's IP address as text, if known.
    let remoteAddress: String?
    let isLoopback: Bool
    private let maxQueued: Int
    private let state = NIOLockedValueBox(State())

    init(id: UInt64, remoteAddress: String?, isLoopback: Bool, maxQueued: Int) {
        self.id = id
        self.remoteAddress = remoteAddress
        self.isLoopback = isLoopback
        self.maxQueued = maxQueued
    }

    /// Queues a frame. False when the socket is closing or its queue was full (it is then closed).
    @discardableResult
    func send(_ frame: [UInt8]) -> Bool {
        let (accepted, waiter) = state.withLockedValue { s -> (Bool, CheckedContinuation<Void, Never>?) in
            guard s.close == nil, !s.finished else { return (false, nil) }
            if s.frames.count >= maxQueued {
                s.close = (1008, "too many unread messages")
                s.frames.removeAll()
            } else {
                s.frames.append(frame)
            }
            let w = s.waiter
            s.waiter = nil
            return (s.close == nil, w)
        }
        waiter?.resume()
        return accepted
    }

    /// Asks the writer to send what is queued, then a close frame with `code`.
    func close(code: UInt16, reason: String) {
        let waiter = state.withLockedValue { s -> CheckedContinuation<Void, Never>? in
            if s.close == nil && !s.finished { s.close = (code, reason) }
            let w = s.waiter
            s.waiter = nil
            return w
        }
        waiter?.resume()
    }

    /// Set once the socket has joined a session (it then outlives the join timeout).
    var hasJoined: Bool { state.withLockedValue { $0.joined } }
    func markJoined() { state.withLockedValue { $0.joined = true } }

    var isClosing: Bool { state.withLockedValue { $0.close != nil || $0.finished } }

    /// The socket is gone: drop whatever is queued.
    func finish() {
        let waiter = state.withLockedValue { s -> CheckedContinuation<Void, Never>? in
            s.finished = true
            s.frames.removeAll()
            let w = s.waiter
            s.waiter = nil
            return w
        }
        waiter?.resume()
    }

    /// Waits for work for the writer: every queued frame at once, then the close if one was asked for.
    func next() async -> Next {
        while true {
            let ready: Next? = state.withLockedValue { s in
                if s.finished { return .finished }
                if !s.frames.isEmpty {
                    let frames = s.frames
                    s.frames.removeAll(keepingCapacity: true)
                    return .frames(frames)
                }
                if let close = s.close {
                    s.finished = true
                    return .close(code: close.code, reason: close.reason)
                }
                return nil
            }
            if let ready { return ready }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { s -> Bool in
                    if s.finished || !s.frames.isEmpty || s.close != nil { return true }
                    s.waiter = c
                    return false
                }
                if resumeNow { c.resume() }
            }
        }
    }
}
