import Testing

@testable import TandemProtocol

@Suite struct JSONParserTests {
    @Test(arguments: [
        ("null", JSON.null), ("true", .bool(true)), ("false", .bool(false)), ("0", .number(0)), ("-12.5e2", .number(-1250)),
        (#""a\"b\\c\/\n\u00e9\ud83d\ude00""#, .string("a\"b\\c/\né😀")), ("[]", .array([])), ("[1, [2, {}]]", .array([.number(1), .array([.number(2), .object([:])])])),
        (#" {"k" : "v", "n": null} "#, .object(["k": .string("v"), "n": .null])),
    ])
    func parsesValid(text: String, expected: JSON) throws {
        #expect(try JSONParser.parse(Array(text.utf8)) == expected)
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul", "\"abc", "\"\\x\"", "\"\\u12\"",
        "\"\\ud800\"", "\"\\udc00\"", "\"a\u{01}b\"", "{\"a\" 1}", "{1:2}", "[1 2]", "1 2", "NaN", "Infinity", "1e400", "'a'",
        "{\"a\":1}x",
    ])
    func rejectsInvalid(text: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(text.utf8)) }
    }

    @Test func rejectsInvalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0x5C, 0x6E, 0xFF, 0x22]) }
    }

    @Test func limitsNesting() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(deep.utf8)) }
        let ok = String(repeating: "[", count: 60) + String(repeating: "]", count: 60)
        #expect(try JSONParser.parse(Array(ok.utf8)) != .null)
    }

    @Test func documentKeepsRawMemberBytes() throws {
        let text = #"{"type":"signal", "data" : {"sdp":"v=0\r\n","x":[1, 2.50]} ,"t":1.250e3}"#
        let doc = try JSONParser.parseDocument(Array(text.utf8))
        #expect(String(decoding: doc.raw("data")!, as: UTF8.self) == #"{"sdp":"v=0\r\n","x":[1, 2.50]}"#)
        #expect(String(decoding: doc.raw("t")!, as: UTF8.self) == "1.250e3")
        #expect(doc["type"]?.stringValue == "signal")
        #expect(throws: JSONParseError.self) { try JSONParser.parseDocument(Array("[1]".utf8)) }
    }

    @Test func writerRoundTrips() throws {
        let value = JSON.object([
            "s": .string("quote \" back \\ nl \n tab \t ctl \u{01} é 😀"), "n": .number(-3.25), "i": .number(42), "b": .bool(false),
            "z": .null, "a": .array([.number(1), .object(["k": .string("v")])]),
        ])
        #expect(try JSONParser.parse(value.encoded) == value)
    }

    @Test func propertyRandomStringsRoundTrip() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let scalars = (0..<Int.random(in: 0...20, using: &rng)).compactMap { _ in
                Unicode.Scalar(UInt32.random(in: 0...0x1F_FFF, using: &rng))
            }
            var s = ""
            s.unicodeScalars.append(contentsOf: scalars)
            #expect(try JSONParser.parse(JSON.string(s).encoded) == .string(s))
        }
    }

    @Test func propertyRandomBytesNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array(#"{}[]":,.-+eE0123456789tfnrul\ "#.utf8) + [0xFF, 0xC3, 0x00]
        for _ in 0..<5000 {
            let bytes = (0..<Int.random(in: 0...40, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            _ = try? JSONParser.parse(bytes)
            _ = try? ClientMessage.decode(bytes)
        }
    }
}
