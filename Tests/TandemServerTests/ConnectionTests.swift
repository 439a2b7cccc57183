import NIOCore
import NIOEmbedded
import NIOWebSocket
import TandemProtocol
import Testing

@testable import TandemServer

/// Holds every write, as a peer that has stopped reading would leave them.
final class StalledPeer: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = WebSocketFrame
    var held: [(WebSocketFrame, EventLoopPromise<Void>?)] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        held.append((unwrapOutboundIn(data), promise))
    }

    func flush(context: ChannelHandlerContext) {}

    /// The peer reads again: everything held goes out.
    func drain() {
        for (_, promise) in held { promise?.succeed() }
        held.removeAll()
    }
}

@Suite("A socket's outgoing frames")
struct ConnectionTests {
    func make(maxQueued: Int) throws -> (Connection, EmbeddedChannel, StalledPeer) {
        let peer = StalledPeer()
        let channel = EmbeddedChannel(handler: peer)
        let connection = Connection(id: 1, channel: channel, remoteAddress: nil, isLoopback: true, maxQueued: maxQueued)
        return (connection, channel, peer)
    }

    @Test func framesAreTextInOrder() throws {
        let (connection, _, peer) = try make(maxQueued: 4)
        for text in ["a", "b", "c"] { #expect(connection.send(Array(text.utf8)) == .sent) }
        #expect(peer.held.map { String(buffer: $0.0.data) } == ["a", "b", "c"])
        #expect(peer.held.allSatisfy { $0.0.opcode == .text && $0.0.fin })
    }

    @Test func aPeerThatStopsReadingIsClosedWith1008() async throws {
        let (connection, channel, peer) = try make(maxQueued: 3)
        channel.isWritable = false
        for _ in 0..<3 { #expect(connection.send([1]) == .sent) }
        #expect(connection.send([2]) == .closedSlow)  // one too many
        #expect(await connection.closeRequested()?.code == CloseCode.slowConsumer)
        #expect(connection.send([3]) == .refused)  // nothing after the close
        #expect(peer.held.count == 3)
    }

    @Test func theBacklogEmptiesWhenThePeerReadsAgain() throws {
        let (connection, channel, peer) = try make(maxQueued: 2)
        channel.isWritable = false
        #expect(connection.send([1]) == .sent && connection.send([2]) == .sent)
        peer.drain()
        #expect(connection.send([3]) == .sent && connection.send([4]) == .sent)  // the two waiting were written
        #expect(!connection.isClosing)
    }

    @Test func theFirstCloseWinsAndFinishWakesTheCloser() async throws {
        let (connection, _, _) = try make(maxQueued: 2)
        connection.close(code: 4409, reason: "replaced")
        connection.close(code: 1000, reason: "later")
        #expect(await connection.closeRequested()?.code == 4409)
        let (other, _, _) = try make(maxQueued: 2)
        other.finish()
        #expect(await other.closeRequested() == nil)
        #expect(other.send([1]) == .refused)

        // A closer already waiting is woken by a close, and by the socket finishing.
        let (waiting, _, _) = try make(maxQueued: 2)
        let woken = Task { await waiting.closeRequested() }
        try await Task.sleep(for: .milliseconds(50))
        waiting.close(code: 4000, reason: "draining")
        #expect(await woken.value?.code == 4000)
        let (gone, _, _) = try make(maxQueued: 2)
        let ended = Task { await gone.closeRequested() }
        try await Task.sleep(for: .milliseconds(50))
        gone.finish()
        #expect(await ended.value == nil)
    }

    @Test func abortDropsTheChannel() throws {
        let (connection, channel, _) = try make(maxQueued: 2)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        // Plain Bools: a failed expectation would describe the channel, and describing an embedded
        // channel's pipeline traps.
        let activeBefore = channel.isActive
        connection.abort()
        let activeAfter = channel.isActive
        #expect(activeBefore && !activeAfter)
        #expect(connection.send([1]) == .refused)
    }
}
