import Foundation
import TandemProtocol
import TandemStore
import Testing

@testable import TandemServer

@Suite("The cluster link's messages and trust")
struct ClusterLinkTests {
    static let messages: [LinkMessage] = [
        .join(socket: 1, identity: "ann", name: "Ann", raw: Array(#"{"type":"join","session":"s1"}"#.utf8)),
        .join(socket: .max, identity: nil, name: nil, raw: []),
        .message(socket: 7, raw: Array(#"{"type":"ping","t":1}"#.utf8)),
        .closed(socket: 9),
        .reject(socket: 2, code: .rateLimited, message: "slow down"),
        .close(socket: 3, code: 4429, reason: "rate limit exceeded repeatedly"),
        .joined(socket: 4, participant: ParticipantID("p-1")),
        .refused(socket: 5, code: .sessionFull, message: "full", retry: false),
        .refused(socket: 5, code: .internal, message: "", retry: true),
        .frame(socket: 6, bytes: [0, 1, 2, 255]),
        .closeSocket(socket: 8, code: 4000, reason: "resume"),
        .switchProvider(socket: 10, session: "s1", provider: "relay"),
        .switched(socket: 10, .success(ProviderState(name: .relay, epoch: 12))),
        .switched(socket: 11, .failure(ProtocolError(.providerUnavailable, "no relay here"))),
        .viewSession(socket: 12, session: "s1"),
        .sessionView(socket: 12, json: Array(#"{"session":"s1"}"#.utf8)),
        .sessionView(socket: 13, json: []),
    ]

    @Test(arguments: messages)
    func messagesRoundTrip(_ message: LinkMessage) throws {
        #expect(try LinkMessage.decode(message.encoded()) == message)
    }

    /// Every prefix of a message, and a message with a byte more, is refused, never misread.
    @Test(arguments: messages)
    func truncatedOrPaddedMessagesAreRefused(_ message: LinkMessage) {
        let bytes = message.encoded()
        for cut in 0..<bytes.count {
            #expect(throws: LinkMessage.DecodeError.self) { try LinkMessage.decode(Array(bytes.prefix(cut))) }
        }
        #expect(throws: LinkMessage.DecodeError.self) { try LinkMessage.decode(bytes + [0]) }
        #expect(throws: LinkMessage.DecodeError.self) { try LinkMessage.decode([99] + bytes.dropFirst()) }
    }

    @Test func proofsNeedTheSecretAndBindTheirInputs() {
        let secret = LinkSecret("cluster-secret-0123456789")
        let nonce = [UInt8](repeating: 7, count: 16)
        let proof = secret.dialProof(node: "n1", nonce: nonce, unixTime: 1000)
        #expect(LinkSecret.equal(proof, LinkSecret("cluster-secret-0123456789").dialProof(node: "n1", nonce: nonce, unixTime: 1000)))
        #expect(!LinkSecret.equal(proof, LinkSecret("another-secret-0123456789").dialProof(node: "n1", nonce: nonce, unixTime: 1000)))
        #expect(!LinkSecret.equal(proof, secret.dialProof(node: "n2", nonce: nonce, unixTime: 1000)))
        #expect(!LinkSecret.equal(proof, secret.dialProof(node: "n1", nonce: nonce, unixTime: 1001)))
        #expect(!LinkSecret.equal(proof, secret.acceptProof(node: "n1", dialNonce: nonce, acceptNonce: nonce)))
    }

    /// Frames open in order with the other end's cipher; a replayed, reordered, altered or reflected
    /// frame is refused.
    @Test func sealedFramesOpenOnlyInOrderAndUnaltered() throws {
        let keys = LinkSecret("cluster-secret-0123456789").keys(dialNonce: [1, 2], acceptNonce: [3, 4])
        #expect(keys.dialer != keys.accepter)
        var dialerOut = LinkCipher(key: keys.dialer)
        var accepterIn = LinkCipher(key: keys.dialer)
        let first = dialerOut.seal([1, 2, 3])
        let second = dialerOut.seal([4, 5])
        #expect(first != dialerOut.seal([1, 2, 3]))  // the same plaintext seals differently each time
        var reordered = accepterIn
        #expect(throws: LinkCipher.Refused.self) { try reordered.open(second) }
        #expect(try accepterIn.open(first) == [1, 2, 3])
        var replayed = accepterIn
        #expect(throws: LinkCipher.Refused.self) { try replayed.open(first) }
        var altered = second
        altered[0] ^= 1
        var tampered = accepterIn
        #expect(throws: LinkCipher.Refused.self) { try tampered.open(altered) }
        #expect(try accepterIn.open(second) == [4, 5])
        // A frame sealed for one direction does not open in the other.
        var reflected = LinkCipher(key: keys.accepter)
        #expect(throws: LinkCipher.Refused.self) { try reflected.open(first) }
    }
}
