from __future__ import annotations

from actors.prompts import (
    ItemPrompt,
    ItemRecord,
    clean,
    enriched_text,
    fallback_description,
    metadata_text,
    validate,
)

TOY = ItemRecord("1", "Toy Story", 1995, "Animation, Children's, Comedy")


def test_conversation_is_grounded_in_the_items_metadata():
    conv = ItemPrompt().conversation(TOY)
    assert conv[0]["role"] == "system" and "Use only the title, year and genres" in conv[0]["content"]
    assert [m["role"] for m in conv[1:]] == ["user", "assistant", "user", "assistant", "user"]
    assert conv[-1]["content"] == "Title: Toy Story\nYear: 1995\nGenres: Animation, Children's, Comedy"


def test_product_prompt_carries_brand_description_and_training_reviews():
    item = ItemRecord("B1", "Desk Lamp", None, categories="Home, Lighting", brand="Lumo",
                      description="LED lamp.", reviews=["bright", "sturdy", "cheap", "fourth"])  # fmt: skip
    last = ItemPrompt(domain="product", max_reviews=3).conversation(item)[-1]["content"]
    assert "Brand: Lumo" in last and "Description: LED lamp." in last and "Categories: Home, Lighting" in last
    assert last.count("Review:") == 3 and "fourth" not in last
    assert "Year" not in last


def test_item_record_from_a_parquet_row_tolerates_missing_values():
    rec = ItemRecord.from_mapping({"item_id": 5, "title": "X", "year": None, "genres": float("nan")})
    assert (rec.item_id, rec.year, rec.genres) == ("5", None, "")


def test_metadata_and_enriched_texts():
    assert metadata_text(TOY) == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert (
        enriched_text(TOY, "funny, toys")
        == "Toy Story (1995). Genres: Animation, Children's, Comedy. funny, toys"
    )
    assert enriched_text(TOY, "  ") == metadata_text(TOY)
    assert fallback_description(TOY) == "Animation, Children's, Comedy, 1995"


def test_clean_strips_artefacts_and_repeated_keywords():
    assert (
        clean("<|im_start|>assistant: Keywords: - warm, funny, warm, Funny, toys\nsecond line")
        == "warm, funny, toys"
    )
    assert clean('"playful, bright."') == "playful, bright"
    assert clean(", ".join(f"k{i}" for i in range(20)), max_keywords=12).count(",") == 11


def test_validation_reasons():
    ok, reason = validate("heartwarming, toys come alive, friendship, family friendly", TOY)
    assert reason is None and ok.startswith("heartwarming")
    assert validate("   ", TOY)[1] == "empty"
    assert validate("fun", TOY)[1] == "too short"
    assert validate(" ".join(["word"] * 30 + [f"w{i}" for i in range(40)]), TOY)[1] == "too long"
    assert validate("I'm sorry, I cannot help with that request", TOY)[1] == "refusal"
    assert validate("Title: Toy Story, Genres: Comedy", TOY)[1] == "echoes the prompt format"
    assert validate("toy story animation comedy", TOY)[1] == "echoes the metadata"
    assert validate("love, love, love, love", TOY)[1] == "too short"  # repeated keywords collapse to one
    assert validate("fun fun fun fun fun fun games", TOY)[1] == "repetitive"
