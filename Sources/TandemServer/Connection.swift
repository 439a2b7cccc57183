import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import TandemProtocol

/// One signaling socket as the rest of the server sees it. Whoever produces a frame (the socket's own
/// reader before the join, its session after) writes it straight into the socket's channel: no writer task
/// and no hop through the cooperative pool on the way out. A socket that stops reading is closed with
/// 1008 once more than `maxQueued` frames wait behind its full send buffer (it may resume). Closing goes
/// through the socket's WebSocket handler, so the close handshake is done properly, after every frame
/// written before it.
final class Connection: ParticipantSocket {
    private struct State {
        var close: (code: UInt16, reason: String)?
        var closer: CheckedContinuation<(code: UInt16, reason: String)?, Never>?
        var finished = false
        /// Frames written while the channel was not writable and not yet handed to the kernel.
        var backlog = 0
    }

    let id: UInt64
    /// The peer's IP address as text, if known.
    let remoteAddress: String?
    let isLoopback: Bool
    private let maxQueued: Int
    private let channel: any Channel
    private let state = NIOLockedValueBox(State())

    init(id: UInt64, channel: any Channel, remoteAddress: String?, isLoopback: Bool, maxQueued: Int) {
        self.id = id
        self.channel = channel
        self.remoteAddress = remoteAddress
        self.isLoopback = isLoopback
        self.maxQueued = maxQueued
    }

    /// Writes a text frame, unless the socket is closing or too far behind (it is then closed).
    @discardableResult
    func send(_ frame: [UInt8]) -> SendOutcome {
        enum Decision {
            case write, refuse
            case overflow(Closer?)
        }
        let writable = channel.isWritable
        let decision = state.withLockedValue { s -> Decision in
            guard s.close == nil, !s.finished else { return .refuse }
            guard !writable else { return .write }
            s.backlog += 1
            if s.backlog <= maxQueued { return .write }
            return .overflow(Self.requestClose(&s, code: CloseCode.slowConsumer, reason: "too many unread messages"))
        }
        switch decision {
        case .refuse:
            return .refused
        case .overflow(let closer):
            closer?.resume(returning: (CloseCode.slowConsumer, "too many unread messages"))
            return .closedSlow
        case .write:
            break
        }
        var buffer = channel.allocator.buffer(capacity: frame.count)
        buffer.writeBytes(frame)
        let wsFrame = WebSocketFrame(fin: true, opcode: .text, data: buffer)
        if writable {
            channel.writeAndFlush(wsFrame, promise: nil)
        } else {
            let written = channel.eventLoop.makePromise(of: Void.self)
            written.futureResult.whenComplete { [state] _ in state.withLockedValue { $0.backlog -= 1 } }
            channel.writeAndFlush(wsFrame, promise: written)
        }
        return .sent
    }

    typealias Closer = CheckedContinuation<(code: UInt16, reason: String)?, Never>

    /// Records the first close request; returns the waiting closer to wake, if any.
    private static func requestClose(_ s: inout State, code: UInt16, reason: String) -> Closer? {
        guard s.close == nil, !s.finished else { return nil }
        s.close = (code, reason)
        defer { s.closer = nil }
        return s.closer
    }

    /// Asks for the socket to be closed with `code` after what was written so far. The first request wins.
    func close(code: UInt16, reason: String) {
        let closer = state.withLockedValue { Self.requestClose(&$0, code: code, reason: reason) }
        closer?.resume(returning: (code, reason))
    }

    /// Drops the TCP connection without a close handshake, for a peer that cannot take one.
    func abort() {
        finish()
        channel.close(promise: nil)
    }

    var isClosing: Bool { state.withLockedValue { $0.close != nil || $0.finished } }

    /// The socket is gone: nothing more is written to it.
    func finish() {
        let closer = state.withLockedValue { s -> Closer? in
            s.finished = true
            defer { s.closer = nil }
            return s.closer
        }
        closer?.resume(returning: nil)
    }

    /// Waits until a close is asked for; nil when the socket finished first.
    func closeRequested() async -> (code: UInt16, reason: String)? {
        await withCheckedContinuation { (c: Closer) in
            let now = state.withLockedValue { s -> (code: UInt16, reason: String)?? in
                if let close = s.close { return .some(close) }
                if s.finished { return .some(nil) }
                s.closer = c
                return nil
            }
            if let now { c.resume(returning: now) }
        }
    }
}

/// The peer's IP address and whether it is a loopback address.
func describe(_ address: SocketAddress?) -> (String?, Bool) {
    guard let address, let ip = address.ipAddress else { return (nil, false) }
    let loopback: Bool
    switch address {
    case .v4: loopback = ip.hasPrefix("127.")
    case .v6: loopback = ip == "::1" || ip.hasPrefix("::ffff:127.")
    default: loopback = false
    }
    return (ip, loopback)
}
