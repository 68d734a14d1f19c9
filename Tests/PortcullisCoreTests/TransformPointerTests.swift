import XCTest
import PortcullisCore
@testable import PortcullisPlugins

final class TransformPointerTests: XCTestCase {
    private func pointer(_ text: String) -> JSONPointer {
        guard case .success(let p) = JSONPointer.parse(text) else { fatalError("bad test pointer \(text)") }
        return p
    }

    private func json(_ text: String) throws -> JSONValue { try JSONCodec.parse(text) }

    func testParseUnescapesTokens() {
        XCTAssertEqual(pointer("").tokens, [])
        XCTAssertEqual(pointer("/a~1b/c~0d/~01").tokens, ["a/b", "c~d", "~1"])
        XCTAssertEqual(pointer("/").tokens, [""])
        XCTAssertEqual(pointer("/a//b").tokens, ["a", "", "b"])
    }

    func testParseRejectsBadSyntax() {
        XCTAssertEqual(JSONPointer.parse("a/b"), .failure(PointerSyntaxError(message: "invalid JSON pointer \"a/b\": must be empty or start with \"/\"")))
        XCTAssertEqual(JSONPointer.parse("/a~2"), .failure(PointerSyntaxError(message: "invalid JSON pointer \"/a~2\": \"~\" must be followed by 0 or 1")))
        XCTAssertEqual(JSONPointer.parse("/a~"), .failure(PointerSyntaxError(message: "invalid JSON pointer \"/a~\": \"~\" must be followed by 0 or 1")))
    }

    func testValueAtWalksObjectsAndArrays() throws {
        let doc = try json(#"{"a":{"b":[10,{"c":"x"}]},"k/l":1,"m~n":2}"#)
        XCTAssertEqual(doc.value(at: pointer("/a/b/1/c")), "x")
        XCTAssertEqual(doc.value(at: pointer("/a/b/0")), 10)
        XCTAssertEqual(doc.value(at: pointer("/k~1l")), 1)
        XCTAssertEqual(doc.value(at: pointer("/m~0n")), 2)
        XCTAssertNil(doc.value(at: pointer("/a/b/2")))
        XCTAssertNil(doc.value(at: pointer("/a/b/01")), "leading zeros are not array indexes")
        XCTAssertNil(doc.value(at: pointer("/a/b/-")))
        XCTAssertNil(doc.value(at: pointer("/a/missing/x")))
        XCTAssertEqual(doc.value(at: pointer("")), doc)
    }

    func testSetCreatesParentsReplacesAndAppends() throws {
        var doc = try json(#"{"list":[1,2]}"#)
        try doc.write("v", at: pointer("/x/y/z"), mode: .set)
        try doc.write(9, at: pointer("/list/0"), mode: .set)
        try doc.write(3, at: pointer("/list/-"), mode: .set)
        try doc.write(4, at: pointer("/list/3"), mode: .set)
        XCTAssertEqual(doc, try json(#"{"list":[9,2,3,4],"x":{"y":{"z":"v"}}}"#))
        XCTAssertEqual(JSONCodec.serialize(doc), #"{"list":[9,2,3,4],"x":{"y":{"z":"v"}}}"#)
    }

    func testSetFailuresLeaveTheDocumentUnchanged() throws {
        var doc = try json(#"{"list":[1],"s":"text"}"#)
        let original = doc
        XCTAssertThrowsError(try doc.write(1, at: pointer("/list/5"), mode: .set)) {
            XCTAssertEqual(($0 as? PointerMiss)?.message, "/list/5: not found")
        }
        XCTAssertThrowsError(try doc.write(1, at: pointer("/list/x"), mode: .set)) {
            XCTAssertEqual(($0 as? PointerMiss)?.message, "/list/x: \"x\" is not a valid array index")
        }
        XCTAssertThrowsError(try doc.write(1, at: pointer("/s/inner"), mode: .set)) {
            XCTAssertEqual(($0 as? PointerMiss)?.message, "/s: expected an object or array, found string")
        }
        XCTAssertThrowsError(try doc.write(1, at: pointer("/list/0/y"), mode: .set)) {
            XCTAssertEqual(($0 as? PointerMiss)?.message, "/list/0: expected an object or array, found number")
        }
        XCTAssertEqual(doc, original)
        try doc.write(1, at: pointer("/new/0/y"), mode: .set)
        XCTAssertEqual(JSONCodec.serialize(doc), #"{"list":[1],"s":"text","new":{"0":{"y":1}}}"#, "created parents are objects")
    }

    func testAddNeverOverwritesAndInsertsIntoArrays() throws {
        var doc = try json(#"{"a":1,"list":["x","z"]}"#)
        XCTAssertFalse(try doc.write(2, at: pointer("/a"), mode: .add))
        XCTAssertTrue(try doc.write("y", at: pointer("/list/1"), mode: .add))
        XCTAssertTrue(try doc.write("end", at: pointer("/list/-"), mode: .add))
        XCTAssertTrue(try doc.write(true, at: pointer("/b"), mode: .add))
        XCTAssertEqual(doc, try json(#"{"a":1,"list":["x","y","z","end"],"b":true}"#))
    }

    func testRemove() throws {
        var doc = try json(#"{"a":{"b":1,"c":2},"list":[0,1,2]}"#)
        XCTAssertEqual(try doc.remove(at: pointer("/a/b")), 1)
        XCTAssertEqual(try doc.remove(at: pointer("/list/1")), 1)
        XCTAssertEqual(doc, try json(#"{"a":{"c":2},"list":[0,2]}"#))
        XCTAssertThrowsError(try doc.remove(at: pointer("/a/zz"))) { XCTAssertEqual(($0 as? PointerMiss)?.message, "/a/zz: not found") }
        XCTAssertThrowsError(try doc.remove(at: pointer("/list/-"))) { _ in }
        XCTAssertThrowsError(try doc.remove(at: pointer("/nope/x"))) { XCTAssertEqual(($0 as? PointerMiss)?.message, "/nope: not found") }
    }

    func testRenameKeepsPositionAndReplacesExistingTarget() throws {
        var doc = try json(#"{"a":1,"b":2,"c":3}"#)
        try doc.renameMember(at: pointer("/b"), to: "c")
        XCTAssertEqual(JSONCodec.serialize(doc), #"{"a":1,"c":2}"#)
        var nested = try json(#"{"items":[{"old":1,"z":0}]}"#)
        try nested.renameMember(at: pointer("/items/0/old"), to: "new")
        XCTAssertEqual(JSONCodec.serialize(nested), #"{"items":[{"new":1,"z":0}]}"#)
        XCTAssertThrowsError(try nested.renameMember(at: pointer("/items/0"), to: "x")) {
            XCTAssertEqual(($0 as? PointerMiss)?.message, "/items: expected an object, found array")
        }
    }
}
