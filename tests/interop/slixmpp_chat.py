"""Interop check with an independent client library (slixmpp).

Two users log in over STARTTLS with the server's SASL offer, Bob announces presence, Alice
sends him a message, Bob answers, and Alice checks the answer. Exit status 0 on success.

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
    for client in (alice, bob):
        client.disconnect()
    await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main())
