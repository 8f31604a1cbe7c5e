"""Write extract.jsonl: the demo's sample dataset (deterministic; rerun to regenerate).

Each record asks for the name, age and city in a short sentence as one line of JSON. A
135M-parameter instruct model rambles or gets the format wrong before training; a short
LoRA run teaches it the exact output, which is easy to see in the demo.
"""
import json
import random
from pathlib import Path

FIRST = """Maria Ahmed Lena Tomas Aiko Kwame Sofia Mateo Priya Lars Amara Diego Yuki Omar
Chloe Ivan Nadia Felix Zara Hugo Mei Arjun Elena Samuel Leila Bruno Ines Kofi Hana
Pavel Lucia Rafael Noor Erik Anya Tariq Clara Jonas Imani Marco Sana Viktor Rosa Emeka
Freya Hassan Julia Kenji Alma""".split()
LAST = """Lopez Okafor Novak Berg Tanaka Mensah Rossi Silva Sharma Nilsson Diallo Garcia Sato
Haddad Martin Petrov Kowalski Weber Ali Dubois Chen Patel Ivanova Cohen Rahimi Costa
Moreau Boateng Kim Horvat Fernandez Mendes Aziz Larsen Volkova Khan Fischer Schmidt
Nwosu Bianchi Qureshi Popescu Reyes Adeyemi Jensen Farouk Lindqvist Nakamura Ortiz
Andersen""".split()
CITIES = """Lisbon Lagos Prague Oslo Osaka Accra Turin Porto Pune Malmo Dakar Seville Kyoto
Beirut Lyon Kazan Krakow Munich Karachi Marseille Shanghai Ahmedabad Sofia Haifa Tabriz
Coimbra Nantes Kumasi Busan Zagreb Valencia Recife Casablanca Aarhus Kiev Lahore Hamburg
Leipzig Enugu Milan Quetta Cluj Manila Ibadan Odense Alexandria Uppsala Sapporo Cordoba
Bergen""".split()
TEMPLATES = [
    "{name}, {age}, lives in {city} and works as a nurse.",
    "Born and raised in {city}, {name} is now {age} years old.",
    "At {age}, {name} opened a small bookshop in {city}.",
    "Our new volunteer is {name} ({age}) from {city}.",
    "{name} from {city} celebrated turning {age} with friends last weekend.",
    "The winner of the {city} chess open was {name}, aged {age}.",
    "I met {name} in {city}; she told me she is {age}.",
    "{name} ({age}, {city}) asked about the delivery of order 1187.",
    "Meet {name}: {age} years old, cyclist, resident of {city}.",
    "After twenty years abroad, {name}, {age}, returned home to {city}.",
    "Patient {name}, age {age}, was referred by a clinic in {city}.",
    "{city} local {name} has been teaching piano since she was {age_minus}; she is {age} now.",
]
INSTRUCTION = "Extract the person's name, age and city as JSON."


def main() -> None:
    rng = random.Random(7)
    out = []
    for _ in range(300):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        age = rng.randint(19, 84)
        city = rng.choice(CITIES)
        text = rng.choice(TEMPLATES).format(name=name, age=age, city=city, age_minus=age - 10)
        answer = json.dumps({"name": name, "age": age, "city": city})
        out.append(json.dumps({"instruction": INSTRUCTION, "input": text, "output": answer}))
    Path(__file__).with_name("extract.jsonl").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
