"""What a text message can carry: GSM 03.38's basic character set (GSM-7), which keeps an
SMS at 160 characters a segment. Notify writes every SMS in it; the referral service
refuses a site short name a text could not show as typed (it is in every page)."""

import unicodedata

# GSM 03.38's basic character set (the extension table's characters cost two).
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


def gsm7(text: str) -> str:
    """`text` in GSM-7's basic set: accents kept where GSM has them, else dropped
    ("Señora Ōtā" → "Señora Ota"), other characters left out."""
    kept = []
    for character in text:
        if character in GSM7:
            kept.append(character)
            continue
        base = unicodedata.normalize("NFKD", character)
        kept.extend(c for c in base if c in GSM7)
    return "".join(kept)
