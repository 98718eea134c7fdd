"""``shop``: the built-in tool domain, an online shop's orders, returns, exchanges and addresses.

A small retail domain in the manner of tau-bench's (Yao et al. 2024, arXiv 2406.12045), small enough to run
offline on a CPU: a seeded database of 24 users, their 1-3 orders each and 8 products with variants, 8 tools
over it, and 36 tasks written as user instructions for database seed 0 (:func:`shop_tasks`). Prices are dollars
with two decimals; every sum is rounded to cents and item lists are stored sorted, so the same calls in any
order leave the same state (and the same :func:`~userloop.simulate.domains.base.state_hash`).

Order statuses: ``pending`` (can be cancelled or sent to another address), ``processed`` (nothing can change),
``delivered`` (items can be returned or exchanged once), ``cancelled``, ``return requested``,
``exchange requested``.
"""

from __future__ import annotations

import random
import zlib

from userloop.models.tools import ToolError
from userloop.simulate.domains.base import FunctionDomain
from userloop.userlm.intents import INTENT_PREFIX

SHOP_SEED = 0  # the database seed the built-in tasks are written for
CANCEL_REASONS = ("no longer needed", "ordered by mistake")

# product id -> (name, option name, {option value: price}); a variant is one option value.
_CATALOGUE = {
    "lamp": ("desk lamp", "color", {"black": 34.99, "white": 34.99, "brass": 49.5}),
    "chair": ("office chair", "color", {"grey": 129.0, "black": 139.0, "blue": 129.0}),
    "kettle": ("electric kettle", "capacity", {"1 l": 24.9, "1.7 l": 29.9}),
    "backpack": ("hiking backpack", "size", {"20 l": 59.0, "30 l": 74.0, "40 l": 89.0}),
    "headphones": ("wireless headphones", "color", {"black": 99.99, "silver": 104.99, "red": 99.99}),
    "tshirt": ("cotton t-shirt", "size", {"s": 15.0, "m": 15.0, "l": 16.5, "xl": 16.5}),
    "bottle": ("water bottle", "color", {"green": 12.75, "orange": 12.75, "steel": 18.25}),
    "shelf": ("bookshelf", "finish", {"oak": 149.0, "walnut": 169.0, "white": 139.0}),
}
_FIRST = ("Ana", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Keisha", "Liam",
          "Mona", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wen", "Yara")
_LAST = ("Ruiz", "Okafor", "Martin", "Patel", "Novak", "Haddad", "Kim", "Tanaka", "Silva", "Berg", "Lewis",
         "Murphy", "Aziz", "Cohen", "Ivanova", "Garcia", "Reid", "Costa", "Yilmaz", "Singh", "Khan", "Meyer",
         "Zhang", "Nasser")
_STREETS = ("Maple Street", "Oak Avenue", "Cedar Lane", "Hill Road", "River Way", "Park Place", "Mill Lane",
            "Station Road")
_CITIES = (("Springfield", "62701"), ("Riverton", "84065"), ("Lakeview", "97630"), ("Fairmont", "26554"),
           ("Ashford", "06278"), ("Brookside", "35004"))
_STATUSES = ("pending", "pending", "pending", "processed", "delivered", "delivered", "delivered", "cancelled")


def make_state(seed: int) -> dict:
    """The shop's database for ``seed``: users, orders, products (all keyed by id), the same for the same seed."""
    rng = random.Random(f"shop-{seed}")
    products = {}
    for product_id, (name, option, prices) in _CATALOGUE.items():
        variants = {}
        for number, (value, price) in enumerate(prices.items(), start=1):
            item_id = f"{product_id}-{number}"
            variants[item_id] = {"item_id": item_id, "options": {option: value}, "price": price,
                                 "available": number == 1 or rng.random() < 0.8}
        products[product_id] = {"product_id": product_id, "name": name, "variants": variants}
    users, orders, order_numbers = {}, {}, rng.sample(range(1000, 10000), 80)
    last_names = rng.sample(_LAST, len(_FIRST))
    for first, last in zip(_FIRST, last_names):
        user_id = f"{first}_{last}".lower()
        city, zip_code = rng.choice(_CITIES)
        address = {"street": f"{rng.randint(1, 400)} {rng.choice(_STREETS)}", "city": city, "zip": zip_code}
        user = {"user_id": user_id, "name": f"{first} {last}", "email": f"{first}.{last}@example.com".lower(),
                "address": address, "orders": []}
        for _ in range(rng.randint(1, 3)):
            order_id = f"#W{order_numbers.pop()}"
            picked = rng.sample(sorted(products), rng.randint(1, 3))
            items = []
            for product_id in picked:
                variant = rng.choice(sorted(products[product_id]["variants"].values(), key=lambda v: v["item_id"]))
                items.append({"item_id": variant["item_id"], "product_id": product_id,
                              "name": products[product_id]["name"], "options": dict(variant["options"]),
                              "price": variant["price"]})
            orders[order_id] = {"order_id": order_id, "user_id": user_id, "status": rng.choice(_STATUSES),
                                "items": items, "total": _cents(item["price"] for item in items),
                                "address": dict(address)}
            user["orders"].append(order_id)
        users[user_id] = user
    return {"users": users, "orders": orders, "products": products}


def _cents(prices) -> float:
    return round(sum(sorted(prices)), 2)


# ---- tools ----------------------------------------------------------------------------------------

def _lookup(state: dict, table: str, key: str, what: str, hint: str = "") -> dict:
    """``state[table][key]``; a missing one is a :class:`ToolError` naming it (and ``hint``)."""
    record = state[table].get(key)
    if record is None:
        raise ToolError(f"no {what} {key!r}{hint}")
    return record


def _order(state: dict, order_id: str) -> dict:
    return _lookup(state, "orders", order_id, "order", " (order ids look like '#W1234')")


def _status(order: dict, wanted: str, action: str) -> None:
    if order["status"] != wanted:
        raise ToolError(f"order {order['order_id']} is {order['status']}: only a {wanted} order can be {action}")


def _items(order: dict, item_ids: list) -> list[dict]:
    if not isinstance(item_ids, list) or not item_ids:
        raise ToolError("item_ids must be a non-empty list of item ids")
    if len(set(item_ids)) != len(item_ids):
        raise ToolError("item_ids lists an item twice")
    by_id = {item["item_id"]: item for item in order["items"]}
    unknown = [item_id for item_id in item_ids if item_id not in by_id]
    if unknown:
        raise ToolError(f"order {order['order_id']} has no item {unknown[0]!r} (items: {', '.join(by_id)})")
    return [by_id[item_id] for item_id in item_ids]


def find_user_by_email(state: dict, email: str) -> str:
    wanted = str(email).strip().lower()
    for user in state["users"].values():
        if user["email"] == wanted:
            return user["user_id"]
    raise ToolError(f"no user with email {email!r}")


def get_user(state: dict, user_id: str) -> dict:
    return _lookup(state, "users", user_id, "user")


def get_order(state: dict, order_id: str) -> dict:
    return _order(state, order_id)


def get_product(state: dict, product_id: str) -> dict:
    return _lookup(state, "products", product_id, "product", f" (products: {', '.join(state['products'])})")


def cancel_order(state: dict, order_id: str, reason: str) -> dict:
    order = _order(state, order_id)
    _status(order, "pending", "cancelled")
    if reason not in CANCEL_REASONS:
        raise ToolError(f"reason must be one of: {', '.join(CANCEL_REASONS)}")
    order.update(status="cancelled", cancel_reason=reason, refund=order["total"])
    return order


def return_items(state: dict, order_id: str, item_ids: list) -> dict:
    order = _order(state, order_id)
    _status(order, "delivered", "returned")
    items = _items(order, item_ids)
    order.update(status="return requested", return_items=sorted(item_ids),
                 refund=_cents(item["price"] for item in items))
    return order


def exchange_items(state: dict, order_id: str, item_ids: list, new_item_ids: list) -> dict:
    order = _order(state, order_id)
    _status(order, "delivered", "exchanged")
    items = _items(order, item_ids)
    if not isinstance(new_item_ids, list) or len(new_item_ids) != len(items):
        raise ToolError("new_item_ids must list one new item for each item in item_ids, in the same order")
    pairs, difference = [], 0.0
    for item, new_id in zip(items, new_item_ids):
        variant = state["products"][item["product_id"]]["variants"].get(new_id)
        if variant is None:
            raise ToolError(f"{new_id!r} is not a variant of {item['name']} (item {item['item_id']}); "
                            f"see get_product {item['product_id']!r}")
        if new_id == item["item_id"]:
            raise ToolError(f"{new_id!r} is the item already ordered")
        if not variant["available"]:
            raise ToolError(f"{new_id!r} is out of stock")
        pairs.append({"item_id": item["item_id"], "new_item_id": new_id})
        difference += variant["price"] - item["price"]
    order.update(status="exchange requested", exchange=sorted(pairs, key=lambda pair: pair["item_id"]),
                 price_difference=round(difference, 2))
    return order


def update_order_address(state: dict, order_id: str, street: str, city: str, zip: str) -> dict:
    order = _order(state, order_id)
    _status(order, "pending", "sent to another address")
    if not all(isinstance(value, str) and value.strip() for value in (street, city, zip)):
        raise ToolError("street, city and zip must be non-empty strings")
    order["address"] = {"street": street.strip(), "city": city.strip(), "zip": zip.strip()}
    return order


def _tool(name: str, description: str, **parameters: tuple[str, str]) -> dict:
    """An OpenAI function schema; each parameter is (JSON type, description), all required."""
    properties = {}
    for arg, (kind, text) in parameters.items():
        properties[arg] = ({"type": "array", "items": {"type": "string"}, "description": text} if kind == "array"
                           else {"type": kind, "description": text})
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": list(parameters)}}}


TOOLS = [
    _tool("find_user_by_email", "The user id of the customer with this email.",
          email=("string", "the customer's email address")),
    _tool("get_user", "A customer's name, email, default address and order ids.", user_id=("string", "the user id")),
    _tool("get_order", "An order: status, items (item id, product, options, price), total, address.",
          order_id=("string", "the order id, e.g. '#W1234'")),
    _tool("get_product", "A product and its variants (item id, options, price, whether available).",
          product_id=("string", "the product id, e.g. 'lamp'")),
    _tool("cancel_order", "Cancel a pending order; the total is refunded.",
          order_id=("string", "the order id"),
          reason=("string", "'no longer needed' or 'ordered by mistake'")),
    _tool("return_items", "Return items of a delivered order (once per order); their price is refunded.",
          order_id=("string", "the order id"), item_ids=("array", "the item ids to return")),
    _tool("exchange_items", "Exchange items of a delivered order for other available variants of the same "
          "products (once per order).", order_id=("string", "the order id"),
          item_ids=("array", "the item ids to exchange"),
          new_item_ids=("array", "the new item id for each item, in the same order")),
    _tool("update_order_address", "Send a pending order to another address.", order_id=("string", "the order id"),
          street=("string", "street and number"), city=("string", "city"), zip=("string", "zip code")),
]
FUNCTIONS = {"find_user_by_email": find_user_by_email, "get_user": get_user, "get_order": get_order,
             "get_product": get_product, "cancel_order": cancel_order, "return_items": return_items,
             "exchange_items": exchange_items, "update_order_address": update_order_address}


# ---- tasks ----------------------------------------------------------------------------------------

_OPENING = f"{INTENT_PREFIX} get help from the customer service of an online shop."
_RETURN_REASONS = ("the parcel arrived damaged", "you changed your mind", "you found a better offer elsewhere",
                   "the quality is not what you expected")
_NEW_ADDRESSES = ({"street": "12 Harbour Street", "city": "Riverton", "zip": "84065"},
                  {"street": "7 Elm Court", "city": "Lakeview", "zip": "97630"},
                  {"street": "230 Orchard Road", "city": "Ashford", "zip": "06278"})
# (kind, how many tasks of it)
_PLAN = (("cancel", 7), ("return", 6), ("exchange", 6), ("address", 5), ("order_total", 4), ("variant_price", 3),
         ("cancel_and_return", 5))


def _described(item: dict) -> str:
    (option, value), = item["options"].items()
    return f"the {item['name']} ({option} {value})"


def _money(value: float) -> str:
    return f"{value:.2f}"


def shop_tasks(seed: int = SHOP_SEED) -> list[dict]:
    """The built-in tasks as scenario records (kind ``tool``) on database ``seed``: 36 tasks of seven kinds
    (cancel, return, exchange, new address, order total, variant price, cancel and return; fewer of a kind on a
    seed whose database has too few orders for it), each an instruction
    to the simulated user (its intent: who it is, what it wants, and facts it gives only when asked), the same
    request in one turn (``full_prompt``), the gold ``actions`` whose replay is the goal state, and the
    ``outputs`` the assistant must tell the user."""
    state = make_state(seed)
    rng = random.Random(f"shop-tasks-{seed}")
    by_status: dict[str, list[tuple[dict, dict]]] = {}
    for user in state["users"].values():
        for order_id in user["orders"]:
            order = state["orders"][order_id]
            by_status.setdefault(order["status"], []).append((user, order))
    tasks: list[dict] = []
    for kind, count in _PLAN:
        candidates = _candidates(kind, by_status, state)
        for number, picked in enumerate(rng.sample(candidates, min(count, len(candidates))), start=1):
            task = _TASK_WRITERS[kind](state, rng, *picked)
            tasks.append({"id": f"shop-{kind.replace('_', '-')}-{number}", "kind": "tool", "domain": "shop",
                          "db_seed": seed, "shards": [], "metadata": {"source": "shop", "task_kind": kind},
                          **task})
    return tasks


def _candidates(kind: str, by_status: dict, state: dict) -> list[tuple]:
    pending, delivered = by_status.get("pending", []), by_status.get("delivered", [])
    if kind in ("cancel", "address"):
        return [(user, order) for user, order in pending]
    if kind == "return":
        return [(user, order) for user, order in delivered]
    if kind == "exchange":
        return [(user, order) for user, order in delivered if _exchange_target(state, order)]
    if kind == "order_total":
        return [(user, order) for user, order in by_status.get("processed", []) + pending if len(order["items"]) > 1]
    if kind == "variant_price":
        return [(user, order) for user, order in delivered + pending]
    pairs = {}  # cancel_and_return: a user's delivered order with a pending one of the same user
    for user, order in delivered:
        other = next((o for u, o in pending if u is user), None)
        if other is not None:
            pairs.setdefault(user["user_id"], (user, other, order))
    return list(pairs.values())


def _exchange_target(state: dict, order: dict) -> tuple[dict, dict] | None:
    for item in order["items"]:
        variants = state["products"][item["product_id"]]["variants"].values()
        other = next((v for v in variants if v["available"] and v["item_id"] != item["item_id"]), None)
        if other is not None:
            return item, other
    return None


_STYLES = ("You write short messages and give one piece of information at a time.",
           "You are in a hurry and a little impatient.",
           "You are polite and chatty, and thank the assistant often.",
           "You are unsure about online forms and ask the assistant to confirm what it did.",
           "You write informally, in lower case, with the odd typo.",
           "You are precise and expect the assistant to be too.")


def _who(user: dict) -> str:
    """The user's name and a way of writing (the same for every task of that user)."""
    return f"You are {user['name']}. {_STYLES[zlib.crc32(user['user_id'].encode()) % len(_STYLES)]}"


def _asked(user: dict, order: dict, known_order: bool) -> str:
    order_fact = (f"your order id is {order['order_id']}" if known_order
                  else "you do not know the order id; you know what the order contains")
    return f"Give these only when asked: your email is {user['email']}; {order_fact}."


def _cancel(state: dict, rng: random.Random, user: dict, order: dict) -> dict:
    reason = rng.choice(CANCEL_REASONS)
    known = rng.random() < 0.5
    item = _described(order["items"][0])
    why = "you ordered it by mistake" if reason == "ordered by mistake" else "you no longer need it"
    intent = (f"{_OPENING} {_who(user)} You want to cancel your pending order with {item} because {why}. "
              f"{_asked(user, order, known)} Confirm when the assistant asks before cancelling.")
    prompt = (f"Hi, I'm {user['name']} ({user['email']}). Please cancel my order {order['order_id']} "
              f"with {item}: the reason is '{reason}'.")
    return {"intent": intent, "full_prompt": prompt,
            "actions": [{"name": "cancel_order", "arguments": {"order_id": order["order_id"], "reason": reason}}],
            "outputs": []}


def _return(state: dict, rng: random.Random, user: dict, order: dict) -> dict:
    items = order["items"] if len(order["items"]) == 1 or rng.random() < 0.4 else [rng.choice(order["items"])]
    described = " and ".join(_described(item) for item in items)
    refund = _money(_cents(item["price"] for item in items))
    intent = (f"{_OPENING} {_who(user)} You want to return {described} from your delivered order because "
              f"{rng.choice(_RETURN_REASONS)}, and you want to know how much will be refunded. "
              f"{_asked(user, order, rng.random() < 0.5)}")
    prompt = (f"Hi, I'm {user['name']} ({user['email']}). I want to return {described} from order "
              f"{order['order_id']}. How much will I get back?")
    return {"intent": intent, "full_prompt": prompt,
            "actions": [{"name": "return_items", "arguments": {
                "order_id": order["order_id"], "item_ids": sorted(item["item_id"] for item in items)}}],
            "outputs": [refund]}


def _exchange(state: dict, rng: random.Random, user: dict, order: dict) -> dict:
    item, new = _exchange_target(state, order)
    (option, value), = new["options"].items()
    intent = (f"{_OPENING} {_who(user)} You want to exchange {_described(item)} from your delivered order for "
              f"the {option} {value} one. If the assistant says it is not available, accept no other. "
              f"{_asked(user, order, rng.random() < 0.5)}")
    prompt = (f"Hi, I'm {user['name']} ({user['email']}). In order {order['order_id']} I'd like to exchange "
              f"{_described(item)} for the {option} {value} version.")
    return {"intent": intent, "full_prompt": prompt,
            "actions": [{"name": "exchange_items", "arguments": {
                "order_id": order["order_id"], "item_ids": [item["item_id"]], "new_item_ids": [new["item_id"]]}}],
            "outputs": []}


def _address(state: dict, rng: random.Random, user: dict, order: dict) -> dict:
    new = rng.choice(_NEW_ADDRESSES)
    where = f"{new['street']}, {new['city']} {new['zip']}"
    intent = (f"{_OPENING} {_who(user)} You moved: your pending order with {_described(order['items'][0])} "
              f"must go to {where} instead of {order['address']['street']}. Only this order, not the others. "
              f"{_asked(user, order, rng.random() < 0.5)}")
    prompt = (f"Hi, I'm {user['name']} ({user['email']}). Please send my order {order['order_id']} to "
              f"{where}.")
    return {"intent": intent, "full_prompt": prompt,
            "actions": [{"name": "update_order_address", "arguments": {"order_id": order["order_id"], **new}}],
            "outputs": []}


def _order_total(state: dict, rng: random.Random, user: dict, order: dict) -> dict:
    items = " and ".join(_described(item) for item in order["items"])
    intent = (f"{_OPENING} {_who(user)} You want to know the total you paid for your order with {items}. "
              f"You do not want to change anything. {_asked(user, order, rng.random() < 0.5)}")
    prompt = (f"Hi, I'm {user['name']} ({user['email']}). What is the total of my order {order['order_id']}?")
    return {"intent": intent, "full_prompt": prompt, "actions": [], "outputs": [_money(order["total"])]}


def _variant_price(state: dict, rng: random.Random, user: dict, order: dict) -> dict:
    item = rng.choice(order["items"])
    product = state["products"][item["product_id"]]
    variant = rng.choice(sorted(product["variants"].values(), key=lambda v: v["item_id"]))
    (option, value), = variant["options"].items()
    intent = (f"{_OPENING} {_who(user)} You are thinking of buying another {product['name']}, in {option} "
              f"{value}, and want to know its price and whether it is available. You do not want to change "
              f"anything. If asked, your email is {user['email']}.")
    prompt = f"How much is the {product['name']} in {option} {value}, and is it available?"
    return {"intent": intent, "full_prompt": prompt, "actions": [], "outputs": [_money(variant["price"])]}


def _cancel_and_return(state: dict, rng: random.Random, user: dict, pending: dict, delivered: dict) -> dict:
    item = delivered["items"][0]
    intent = (f"{_OPENING} {_who(user)} Two things: first cancel your pending order with "
              f"{_described(pending['items'][0])} because it is no longer needed; then return "
              f"{_described(item)} from your delivered order because {rng.choice(_RETURN_REASONS)}. "
              f"Give these only when asked: your email is {user['email']}; the order ids are "
              f"{pending['order_id']} (to cancel) and {delivered['order_id']} (to return from).")
    prompt = (f"Hi, I'm {user['name']} ({user['email']}). Please cancel order {pending['order_id']} (no longer "
              f"needed) and return {_described(item)} from order {delivered['order_id']}.")
    return {"intent": intent, "full_prompt": prompt, "actions": [
        {"name": "cancel_order", "arguments": {"order_id": pending["order_id"], "reason": "no longer needed"}},
        {"name": "return_items", "arguments": {"order_id": delivered["order_id"], "item_ids": [item["item_id"]]}}],
        "outputs": []}


_TASK_WRITERS = {"cancel": _cancel, "return": _return, "exchange": _exchange, "address": _address,
                 "order_total": _order_total, "variant_price": _variant_price,
                 "cancel_and_return": _cancel_and_return}


def shop_domain() -> FunctionDomain:
    """The built-in ``shop`` domain with its tasks (:func:`shop_tasks`)."""
    return FunctionDomain("shop", TOOLS, FUNCTIONS, make_state, shop_tasks())

