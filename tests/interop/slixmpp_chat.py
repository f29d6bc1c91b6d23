"""Interop check with an independent client library (slixmpp).

Two users log in over STARTTLS with the server's SASL offer, Bob announces presence, Alice
sends him a message, Bob answers, and Alice checks the answer. Then Bob leaves, Alice writes
to him, and Bob's next login gets the offline messages once: slixmpp answers the server's
ping after each batch, which is how the server knows they arrived and may delete them. Exit
status 0 on success.

Usage: slixmpp_chat.py HOST PORT CAFILE ALICE_JID ALICE_PW BOB_JID BOB_PW
"""

import asyncio
import logging
import os
import ssl
import sys

import slixmpp

TIMEOUT = 20


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cafile):
        super().__init__(jid, password)
        context = ssl.create_default_context(cafile=cafile)
        self.ssl_context = context
        self.online = asyncio.Event()
        self.messages = asyncio.Queue()
        self.seen = {}
        self.add_event_handler("presence_available", self.on_available)
        self.add_event_handler("presence_unavailable", self.on_unavailable)
        self.gone = {}
        self.mechanism = None
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", self.on_failed)
        self.add_event_handler("auth_success", self.on_auth)

    async def on_start(self, _event):
        self.send_presence()
        await self.get_roster()
        self.online.set()

    def on_auth(self, _event):
        self.mechanism = getattr(self.plugin["feature_mechanisms"], "mech", None)

    def on_available(self, presence):
        self.seen.setdefault(presence["from"].bare, asyncio.Event()).set()

    def on_unavailable(self, presence):
        self.gone.setdefault(presence["from"].bare, asyncio.Event()).set()

    def saw_leave(self, bare):
        return self.gone.setdefault(bare, asyncio.Event()).wait()

    def saw(self, bare):
        return self.seen.setdefault(bare, asyncio.Event()).wait()

    def on_failed(self, _event):
        print(f"authentication failed for {self.boundjid}", file=sys.stderr)

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal"):
            self.messages.put_nowait(msg)


async def main():
    if os.environ.get("SLIXMPP_DEBUG"):
        logging.basicConfig(level=logging.DEBUG)
    host, port, cafile, a_jid, a_pw, b_jid, b_pw = sys.argv[1:8]
    alice = Client(a_jid, a_pw, cafile)
    bob = Client(b_jid, b_pw, cafile)
    for client in (alice, bob):
        client.connect(host=host, port=int(port))
    await asyncio.wait_for(asyncio.gather(alice.online.wait(), bob.online.wait()), TIMEOUT)
    for name, client in (("alice", alice), ("bob", bob)):
        mech = client.mechanism.name if client.mechanism is not None else "?"
        print(f"{name} logged in as {client.boundjid.full} with {mech}")

    # Alice adds Bob; Bob's slixmpp accepts (auto_authorize), and with the server's mutual
    # acceptance each then sees the other's presence.
    alice.send_presence(pto=b_jid, ptype="subscribe")
    await asyncio.wait_for(asyncio.gather(alice.saw(b_jid), bob.saw(a_jid)), TIMEOUT)
    for name, client, other in (("alice", alice, b_jid), ("bob", bob, a_jid)):
        # Presence may arrive before the last roster push (to, then both): wait for it.
        for _ in range(TIMEOUT * 20):
            if client.client_roster[other]["subscription"] == "both":
                break
            await asyncio.sleep(0.05)
        sub = client.client_roster[other]["subscription"]
        print(f"{name}'s roster has {other} with subscription={sub}")
        assert sub == "both", (name, sub)

    alice.send_message(mto=b_jid, mbody="bonjour depuis slixmpp", mtype="chat")
    got = await asyncio.wait_for(bob.messages.get(), TIMEOUT)
    assert got["body"] == "bonjour depuis slixmpp", got
    assert got["from"].bare == a_jid, got["from"]
    bob.send_message(mto=got["from"], mbody="bien reçu", mtype="chat")
    answer = await asyncio.wait_for(alice.messages.get(), TIMEOUT)
    assert answer["body"] == "bien reçu", answer
    assert answer["from"].bare == b_jid, answer["from"]
    print("slixmpp interop: login, add/accept, presence and messages both ways OK")

    # Offline messages: kept while Bob is away, delivered at his next login, and only once.
    await leave(bob)
    await asyncio.wait_for(alice.saw_leave(b_jid), TIMEOUT)
    bodies = [f"hors ligne {n}" for n in range(3)]
    for body in bodies:
        alice.send_message(mto=b_jid, mbody=body, mtype="chat")
    await asyncio.sleep(0.5)
    bob = await log_in(b_jid, b_pw, cafile, host, port)
    got = [await asyncio.wait_for(bob.messages.get(), TIMEOUT) for _ in bodies]
    assert [m["body"] for m in got] == bodies, [m["body"] for m in got]
    assert all(m.xml.find("{urn:xmpp:delay}delay") is not None for m in got), got
    # Time for slixmpp to answer the ping that follows the batch.
    await asyncio.sleep(1)
    await leave(bob)
    bob = await log_in(b_jid, b_pw, cafile, host, port)
    await asyncio.sleep(1.5)
    assert bob.messages.empty(), "offline messages were delivered twice"
    print("slixmpp interop: offline messages delivered once, acknowledged by slixmpp OK")
    for client in (alice, bob):
        await leave(client)


async def log_in(jid, password, cafile, host, port):
    client = Client(jid, password, cafile)
    client.connect(host=host, port=int(port))
    await asyncio.wait_for(client.online.wait(), TIMEOUT)
    return client


async def leave(client):
    closing = client.disconnect()
    if asyncio.isfuture(closing) or asyncio.iscoroutine(closing):
        await asyncio.wait_for(closing, TIMEOUT)
    await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main())
