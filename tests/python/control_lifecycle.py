"""Drives a full room lifecycle against a running vpr-server over gRPC with
the Python client that grpcio-tools generates from proto/ at run time.

Steps: CreateRoom, AdmitParticipant without consent (must be rejected),
AdmitParticipant for a resident with consent and an officer with a badge id,
GetSession, CloseRoom and ListSessions. Each step checks the response and
exits non-zero on the first mismatch. The last line printed is
`room_id=<id> state=<state> disposition=<disposition>`.

Usage: control_lifecycle.py --address 127.0.0.1:50051 --key-id test \
           --key-secret SECRET --proto-dir proto --out-dir /tmp/gen
"""

import argparse
import importlib
import os
import sys
import time
import uuid

import grpc
import jwt
from grpc_tools import protoc

PROTO_FILE = "vpr/control/v1/control.proto"


def generate(proto_dir, out_dir):
    """Generates the Python modules for PROTO_FILE into out_dir and imports them."""
    os.makedirs(out_dir, exist_ok=True)
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            os.path.join(proto_dir, PROTO_FILE),
        ]
    )
    if status != 0:
        sys.exit(f"protoc failed with status {status}")
    sys.path.insert(0, out_dir)
    messages = importlib.import_module("vpr.control.v1.control_pb2")
    services = importlib.import_module("vpr.control.v1.control_pb2_grpc")
    return messages, services


def api_jwt(key_id, secret):
    """Mints the HS256 API JWT the server expects: `kid` header, iat and exp."""
    now = int(time.time())
    return jwt.encode(
        {"iat": now, "exp": now + 300},
        secret,
        algorithm="HS256",
        headers={"kid": key_id},
    )


def check(condition, message):
    if not condition:
        sys.exit(f"check failed: {message}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="gRPC host:port of vpr-server")
    parser.add_argument("--key-id", required=True, help="API key id")
    parser.add_argument("--key-secret", required=True, help="API key secret")
    parser.add_argument("--proto-dir", required=True, help="directory holding vpr/control/v1")
    parser.add_argument("--out-dir", required=True, help="directory for generated modules")
    args = parser.parse_args()

    pb, pb_grpc = generate(args.proto_dir, args.out_dir)
    metadata = [("authorization", f"Bearer {api_jwt(args.key_id, args.key_secret)}")]
    channel = grpc.insecure_channel(args.address)
    grpc.channel_ready_future(channel).result(timeout=10)
    rooms = pb_grpc.RoomServiceStub(channel)

    incident_id = f"PY-{uuid.uuid4().hex[:8]}"
    created = rooms.CreateRoom(
        pb.CreateRoomRequest(
            incident_id=incident_id,
            request_id="py-create-1",
            call_type="burglary",
            metadata='{"source":"python"}',
        ),
        metadata=metadata,
        timeout=10,
    )
    room = created.room
    check(created.created, "CreateRoom did not create a room")
    check(room.room_id.startswith("rm_"), f"room id {room.room_id!r}")
    check(room.state == pb.ROOM_STATE_OPEN, f"new room state {room.state}")
    print(f"created room_id={room.room_id} incident_id={incident_id}")

    try:
        rooms.AdmitParticipant(
            pb.AdmitParticipantRequest(
                room_id=room.room_id, identity="caller", role=pb.ROLE_RESIDENT
            ),
            metadata=metadata,
            timeout=10,
        )
        check(False, "resident without consent was admitted")
    except grpc.RpcError as error:
        check(
            error.code() == grpc.StatusCode.FAILED_PRECONDITION,
            f"resident without consent: {error.code()} {error.details()}",
        )

    resident = rooms.AdmitParticipant(
        pb.AdmitParticipantRequest(
            room_id=room.room_id,
            identity="caller",
            display_name="A. Resident",
            role=pb.ROLE_RESIDENT,
            consent=pb.Consent(
                live_video=True, audio=True, recording=False, channel="sms_link"
            ),
        ),
        metadata=metadata,
        timeout=10,
    )
    check(resident.participant_id.startswith("pt_"), "resident participant id")
    check(resident.join_url.endswith(resident.join_token), "join_url carries the token")
    check(resident.can_publish and resident.can_subscribe, "resident permissions")

    officer = rooms.AdmitParticipant(
        pb.AdmitParticipantRequest(
            room_id=room.room_id,
            identity="cst-17",
            role=pb.ROLE_OFFICER,
            badge_id="4411",
        ),
        metadata=metadata,
        timeout=10,
    )
    check(officer.participant_id != resident.participant_id, "distinct participants")

    session = rooms.GetSession(
        pb.GetSessionRequest(room_id=room.room_id), metadata=metadata, timeout=10
    )
    identities = [p.identity for p in session.participants]
    check(identities == ["caller", "cst-17"], f"session participants {identities}")
    check(session.participants[1].badge_id == "4411", "officer badge id")
    check(len(session.consents) == 1, f"consents {len(session.consents)}")
    check(session.consents[0].consent.channel == "sms_link", "consent channel")

    closed = rooms.CloseRoom(
        pb.CloseRoomRequest(
            room_id=room.room_id,
            disposition=pb.DISPOSITION_RESOLVED_VIRTUALLY,
            notes="advice given",
        ),
        metadata=metadata,
        timeout=10,
    )
    check(closed.state == pb.ROOM_STATE_CLOSED, f"closed state {closed.state}")

    listed = rooms.ListSessions(
        pb.ListSessionsRequest(incident_id=incident_id, page_size=10),
        metadata=metadata,
        timeout=10,
    )
    check(len(listed.sessions) == 1, f"listed sessions {len(listed.sessions)}")
    record = listed.sessions[0]
    check(record.room.room_id == room.room_id, "listed room id")
    kinds = [event.kind for event in record.events]
    check(kinds[0] == "room_created" and kinds[-1] == "room_closed", f"events {kinds}")

    state = pb.RoomState.Name(record.room.state)
    disposition = pb.Disposition.Name(record.room.disposition)
    print(f"room_id={record.room.room_id} state={state} disposition={disposition}")


if __name__ == "__main__":
    main()
