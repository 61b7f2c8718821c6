"""Language identification (langskew.langid) against texts whose language is known: sentences
written for this test, one or two per language, as a diagnosis meets them (reviews, questions)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from langskew.langid import UNDETERMINED, detect_languages, detect_rows

KNOWN = {
    "en": ["The delivery arrived two days late and the box was damaged.",
           "Could you tell me where the nearest train station is?"],
    "fr": ["La livraison est arrivée avec deux jours de retard et le carton était abîmé.",
           "Pourriez-vous me dire où se trouve la gare la plus proche ?"],
    "de": ["Die Lieferung kam zwei Tage zu spät und der Karton war beschädigt.",
           "Können Sie mir sagen, wo der nächste Bahnhof ist?"],
    "es": ["El pedido llegó con dos días de retraso y la caja estaba dañada.",
           "¿Podría decirme dónde está la estación de tren más cercana?"],
    "it": ["La consegna è arrivata con due giorni di ritardo e la scatola era danneggiata.",
           "Mi può dire dove si trova la stazione ferroviaria più vicina?"],
    "pt": ["A entrega chegou com dois dias de atraso e a caixa estava danificada.",
           "Você poderia me dizer onde fica a estação de trem mais próxima?"],
    "nl": ["De bezorging kwam twee dagen te laat en de doos was beschadigd.",
           "Kunt u mij vertellen waar het dichtstbijzijnde treinstation is?"],
    "ru": ["Посылка пришла на два дня позже, и коробка была повреждена.",
           "Не подскажете, где находится ближайший вокзал?"],
    "ja": ["荷物は二日遅れて届き、箱が壊れていました。", "一番近い駅はどこですか？"],
    "zh": ["包裹晚到了两天，而且箱子坏了。", "请问最近的火车站在哪里？"],
    "ar": ["وصل الطلب متأخرا يومين وكان الصندوق تالفا.", "هل يمكنك أن تخبرني أين أقرب محطة قطار؟"],
    "hi": ["सामान दो दिन देर से पहुँचा और डिब्बा टूटा हुआ था।", "क्या आप बता सकते हैं कि सबसे नज़दीकी रेलवे स्टेशन कहाँ है?"],
    "tr": ["Sipariş iki gün geç geldi ve kutu hasarlıydı.", "En yakın tren istasyonunun nerede olduğunu söyler misiniz?"],
    "ko": ["배송이 이틀 늦게 도착했고 상자가 파손되어 있었습니다.", "가장 가까운 기차역이 어디인지 알려 주시겠어요?"],
    "pl": ["Przesyłka dotarła z dwudniowym opóźnieniem, a pudełko było uszkodzone.",
           "Czy może mi pan powiedzieć, gdzie jest najbliższa stacja kolejowa?"],
}


def test_every_known_sentence_is_detected_in_its_language():
    texts = [t for sents in KNOWN.values() for t in sents]
    truth = [lang for lang, sents in KNOWN.items() for _ in sents]
    languages, confidence = detect_languages(texts)
    wrong = [(t, lang, got) for t, lang, got in zip(texts, truth, languages) if got != lang]
    assert wrong == []
    assert ((confidence > 0.3) & (confidence <= 1)).all()


def test_capitals_newlines_and_text_without_words():
    texts = ["LA LIVRAISON EST ARRIVÉE AVEC DEUX JOURS DE RETARD ET LE CARTON ÉTAIT ABÎMÉ.",
             "Die Lieferung kam zwei Tage zu spät\nund der Karton war beschädigt.",
             "", "   ", "?!... :-)", None, float("nan")]
    languages, confidence = detect_languages(texts)
    assert list(languages[:2]) == ["fr", "de"]
    assert list(languages[2:]) == [UNDETERMINED] * 5
    assert (confidence[2:] == 0).all()


def test_pairs_premise_decides_and_disagreements_are_counted():
    premises = [KNOWN["en"][0], KNOWN["fr"][0], KNOWN["de"][0], "..."]
    hypotheses = [KNOWN["en"][1], KNOWN["es"][1], KNOWN["de"][1], KNOWN["ru"][0]]
    detection = detect_rows(premises, hypotheses)
    assert list(detection.language) == ["en", "fr", "de", UNDETERMINED]
    assert detection.disagreements == 1  # fr/es; the undetermined premise is not a disagreement
    assert detection.counts().to_dict() == {"en": 1, "fr": 1, "de": 1, UNDETERMINED: 1}
    assert detection.low_confidence_share(0.5) == pytest.approx(
        np.mean(detection.confidence < 0.5))


def test_detection_needs_no_network():
    code = f"""
import socket
def refuse(*args, **kwargs):
    raise OSError("network use during language detection")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from langskew.langid import detect_languages
print(list(detect_languages({[KNOWN['fr'][0], KNOWN['ja'][0]]!r})[0]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "['fr', 'ja']"


def test_several_processes_give_the_same_result(monkeypatch):
    from langskew import langid

    monkeypatch.setattr(langid, "CHUNK", 97)  # twelve chunks over two processes
    texts = [t for sents in KNOWN.values() for t in sents] * 40 + ["", "?"]
    one = detect_languages(texts, workers=1)
    two = detect_languages(texts, workers=2)
    assert list(one[0]) == list(two[0]) and np.array_equal(one[1], two[1])
    assert list(two[0][:2]) == ["en", "en"] and list(two[0][-2:]) == [UNDETERMINED] * 2
