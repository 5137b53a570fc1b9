"""S3's error document: the elements clients read, and escaping."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree.ElementTree import fromstring

import botocore.session
import pytest
from botocore.handlers import decode_list_object_v2
from botocore.parsers import create_parser

from pockity.s3api import xml
from pockity.s3api.errors import S3Error
from pockity.s3api.xml import error_document


def test_the_error_document_has_what_s3_clients_read() -> None:
    err = S3Error("NoSuchKey", "The specified key does not exist.", 404, Key="a<&>.txt", BucketName="pockity")
    body = error_document(err, "/pockity/a<&>.txt", "req-1")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error>')
    root = fromstring(body)
    fields = {child.tag: child.text for child in root}
    assert fields == {
        "Code": "NoSuchKey",
        "Message": "The specified key does not exist.",
        "Key": "a<&>.txt",
        "BucketName": "pockity",
        "Resource": "/pockity/a<&>.txt",
        "RequestId": "req-1",
    }
    assert b"a&lt;&amp;&gt;.txt" in body


# What clients read out of our documents: botocore's own rest-xml parser and its listing decoders.

_S3 = botocore.session.get_session().get_service_model("s3")
AT = datetime(2026, 12, 3, 12, 30, 45, 123456, tzinfo=UTC)


def parsed(operation: str, body: bytes) -> dict:  # type: ignore[type-arg]
    shape = _S3.operation_model(operation).output_shape
    return create_parser("rest-xml").parse({"body": body, "headers": {}, "status_code": 200}, shape)  # type: ignore[no-any-return]


def test_list_buckets_reads_back() -> None:
    out = parsed("ListBuckets", xml.list_buckets(xml.Owner("u1", "alice"), [("pockity", AT)]))
    assert out["Owner"] == {"ID": "u1", "DisplayName": "alice"}
    assert out["Buckets"] == [{"Name": "pockity", "CreationDate": AT.replace(microsecond=123000)}]


def test_a_url_encoded_v2_listing_reads_back_as_the_real_keys() -> None:
    keys = ["a b+c.txt", "ü/日本.pdf", "100%/x&y"]
    listing = xml.Listing(
        bucket="pockity",
        prefix="",
        delimiter="/",
        max_keys=2,
        entries=[xml.Entry(k, AT, "abc", 3) for k in keys[:1]],
        common_prefixes=["ü/", "100%/"],
        is_truncated=True,
        url_encoded=True,
    )
    body = xml.list_objects_v2(listing, continuation_token=None, next_token="tok+/=", start_after=None, owner=None)
    out = parsed("ListObjectsV2", body)
    decode_list_object_v2(out, context={"encoding_type_auto_set": True})
    assert [c["Key"] for c in out["Contents"]] == ["a b+c.txt"]
    assert [p["Prefix"] for p in out["CommonPrefixes"]] == ["ü/", "100%/"]
    assert (out["IsTruncated"], out["KeyCount"], out["NextContinuationToken"]) == (True, 3, "tok+/=")
    assert out["Contents"][0]["ETag"] == '"abc"' and out["Contents"][0]["Size"] == 3


def test_a_v1_listing_reads_back() -> None:
    listing = xml.Listing("pockity", "p/", None, 1000, [xml.Entry("p/a", AT, "e", 1)], [], False, False)
    out = parsed("ListObjects", xml.list_objects_v1(listing, marker="", next_marker=None, owner=xml.Owner("u", "n")))
    assert out["Contents"][0]["Key"] == "p/a" and out["Contents"][0]["Owner"]["ID"] == "u"
    assert out["Prefix"] == "p/" and out["IsTruncated"] is False


def test_delete_result_quiet_and_verbose() -> None:
    outcomes = [xml.DeleteOutcome("a"), xml.DeleteOutcome("b", S3Error("AccessDenied", "no", 403))]
    verbose = parsed("DeleteObjects", xml.delete_result(outcomes, quiet=False))
    assert verbose["Deleted"] == [{"Key": "a"}]
    assert verbose["Errors"] == [{"Key": "b", "Code": "AccessDenied", "Message": "no"}]
    quiet = parsed("DeleteObjects", xml.delete_result(outcomes, quiet=True))
    assert "Deleted" not in quiet and len(quiet["Errors"]) == 1


def test_request_bodies_parse_and_bad_ones_are_malformed() -> None:
    delete = (
        b'<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Quiet>true</Quiet>'
        b"<Object><Key>a&amp;b</Key></Object><Object><Key>c</Key></Object></Delete>"
    )
    assert xml.parse_delete(delete) == (["a&b", "c"], True)
    complete = (
        b'<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"e1"</ETag></Part>'
        b"<Part><ETag>e2</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>"
    )
    assert xml.parse_complete(complete) == [(1, "e1"), (2, "e2")]
    bad = [
        b"<Delete><Object><Key>a</Key></Object>",
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "y">]><Delete><Object><Key>&x;</Key></Object></Delete>',
        b"<Other/>",
        b"<Delete></Delete>",
        b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
        '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE d [<!ENTITY x "y">]><Delete/>'.encode("utf-16"),
    ]
    for body in bad:
        with pytest.raises(S3Error) as err:
            xml.parse_delete(body)
        assert err.value.code == "MalformedXML", body[:60]
    with pytest.raises(S3Error) as err:
        xml.parse_complete(
            b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>"
        )
    assert err.value.code == "MalformedXML"
