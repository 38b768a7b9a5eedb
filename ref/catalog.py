"""Every paper of the seed list: what covers it here, and how far it is.

One row per paper of ``papers/seed-abstracts.txt`` (all 70, surveys included): its title, arXiv id,
year and group, the issues that plan its work, and the module, lesson, figure and tests that cover
it once they exist. ``status`` is derived, never typed: *implemented* when all four exist,
*partial* when some do, *planned* otherwise. ``python -m ref papers`` prints the table; the README
table is generated from it (``python -m ref papers --update-readme``) and a test fails when the two
drift or when a row names a file that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root (editable install / checkout)


@dataclass(frozen=True)
class Paper:
    key: str
    title: str
    arxiv: str
    year: int
    group: str
    issues: tuple[int, ...] = ()  # the issues that plan its work
    kind: str = "paper"  # "paper" or "survey"
    module: str | None = None  # e.g. "ref/models/mamba.py"
    lesson: str | None = None  # e.g. "lessons/05_mamba.py"
    figure: str | None = None  # e.g. "figures/05_mamba.png"
    tests: str | None = None  # e.g. "tests/models/test_mamba.py"

    @property
    def status(self) -> str:
        parts = [self.module, self.lesson, self.figure, self.tests]
        if all(parts):
            return "implemented"
        return "partial" if any(parts) else "planned"

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"


PAPERS: tuple[Paper, ...] = (
    Paper('multimodn', 'MultiModN- Multimodal, Multi-Task, Interpretable Modular Networks', '2309.14118', 2023, 'multimodal', issues=()),
    Paper('codegen2', 'CodeGen2: Lessons for Training LLMs on Programming and Natural Languages', '2305.02309', 2023, 'attention', issues=(3,), module='ref/tasks/span_corruption.py', lesson='lessons/20_codegen2_infilling.py', figure='figures/20_codegen2_infilling.png', tests='tests/tasks/test_span_corruption.py'),
    Paper('matryoshka', 'Matryoshka Representation Learning', '2205.13147', 2022, 'representation learning', issues=()),
    Paper('rnn_review', 'A Critical Review of Recurrent Neural Networks for Sequence Learning', '1506.00019', 2015, 'recurrent', issues=(6,), kind="survey", module='ref/mixers/rnn/__init__.py', lesson='lessons/13_rnn_review.py', figure='figures/13_rnn_review.png', tests='tests/mixers/test_rnn.py'),
    Paper('ssm_medical_survey', 'Computation-Efficient Era: A Comprehensive Survey of State Space Models in Medical Image Analysis', '2406.03430', 2024, 'state space', issues=(5,), kind="survey", module='ref/models/cross_scan.py', lesson='lessons/12_ssm_surveys_cross_scan.py', figure='figures/12_ssm_surveys_cross_scan.png', tests='tests/models/test_cross_scan.py'),
    Paper('languini', 'The Languini Kitchen: Enabling Language Modelling Research at Different Scales of Compute', '2309.11197', 2023, 'attention', issues=(3, 6), module='ref/models/qlstm.py', lesson='lessons/16_languini_compute.py', figure='figures/16_languini_compute.png', tests='tests/mixers/test_qlstm.py'),
    Paper('sparsey', 'Superposed Episodic and Semantic Memory via Sparse Distributed Representation', '1710.07829', 2017, 'memory', issues=()),
    Paper('brain_like_attention', 'Brain-Like Language Processing via a Shallow Untrained Multihead Attention Network', '2406.15109', 2024, 'attention', issues=(3,), module='ref/models/suma.py', lesson='lessons/21_brain_like_attention.py', figure='figures/21_brain_like_attention.png', tests='tests/models/test_suma.py'),
    Paper('pointer_networks', 'Pointer Networks', '1506.03134', 2015, 'attention', issues=(3,), module='ref/models/pointer_net.py', lesson='lessons/14_pointer_networks.py', figure='figures/14_pointer_networks.png', tests='tests/models/test_pointer_net.py'),
    Paper('in_context_language_learning', 'In-Context Language Learning: Architectures and Algorithms', '2401.12973', 2024, 'in-context learning', issues=(3,), module='ref/tasks/regbench.py', lesson='lessons/24_in_context_language_learning.py', figure='figures/24_in_context_language_learning.png', tests='tests/tasks/test_regbench.py'),
    Paper('talking_heads', 'Talking Heads: Understanding Inter-layer Communication in Transformer Language Models', '2406.09519', 2024, 'interpretability', issues=(3,), module='ref/models/talking_heads.py', lesson='lessons/22_talking_heads.py', figure='figures/22_talking_heads.png', tests='tests/models/test_talking_heads.py'),
    Paper('kan_selectable', 'Activation Space Selectable Kolmogorov-Arnold Networks', '2408.08338', 2024, 'architectures', issues=()),
    Paper('input_gradients', 'Do Input Gradients Highlight Discriminative Features?', '2102.12781', 2021, 'interpretability', issues=()),
    Paper('knn_lm', 'Why do Nearest Neighbor Language Models Work?', '2301.02828', 2023, 'language modelling', issues=()),
    Paper('yi', 'Yi: Open Foundation Models by 01.AI', '2403.04652', 2024, 'attention', issues=(3,), module='ref/models/yi.py', lesson='lessons/19_yi_depth_upscaling.py', figure='figures/19_yi_depth_upscaling.png', tests='tests/models/test_yi.py'),
    Paper('matryoshka_2d', '2D Matryoshka Sentence Embeddings', '2402.14776', 2024, 'representation learning', issues=()),
    Paper('continual_baseline', 'A Simple Baseline that Questions the Use of Pretrained-Models in Continual Learning', '2210.04428', 2022, 'training', issues=()),
    Paper('mamba_survey', 'A Survey of Mamba', '2408.01129', 2024, 'state space', issues=(5,), kind="survey", module='ref/models/cross_scan.py', lesson='lessons/12_ssm_surveys_cross_scan.py', figure='figures/12_ssm_surveys_cross_scan.png', tests='tests/models/test_cross_scan.py'),
    Paper('foundation_model_differences', 'Understanding the differences in Foundation Models: Attention, State Space Models, and Recurrent Neural Networks', '2405.15731', 2024, 'state space', issues=(5,), module='ref/mixers/dsf.py', lesson='lessons/11_dsf_framework.py', figure='figures/11_dsf_framework.png', tests='tests/mixers/test_dsf.py'),
    Paper('verbatim_stm', 'Characterizing Verbatim Short-Term Memory in Neural Language Models', '2210.13569', 2022, 'recurrent', issues=(6,), module='ref/models/repeat_surprisal.py', lesson='lessons/27_verbatim_stm.py', figure='figures/27_verbatim_stm.png', tests='tests/models/test_repeat_surprisal.py'),
    Paper('making_the_most', 'Making the Most of your Model: Methods for Finetuning and Applying Pretrained Transformers', '2408.16241', 2024, 'recurrent', issues=(6,), module='ref/models/hidden_state_opt.py', lesson='lessons/31_making_the_most.py', figure='figures/31_making_the_most.png', tests='tests/models/test_hidden_state_opt.py'),
    Paper('dmoerm', 'DMoERM: Recipes of Mixture-of-Experts for Effective Reward Modeling', '2403.01197', 2024, 'mixture of experts', issues=()),
    Paper('find_benchmark', 'A Function Interpretation Benchmark for Evaluating Interpretability Methods', '2309.03886', 2023, 'interpretability', issues=()),
    Paper('icl_linear_models', 'What learning algorithm is in-context learning? Investigations with linear models', '2211.15661', 2022, 'in-context learning', issues=(3,), module='ref/models/icl_lsa.py', lesson='lessons/15_icl_linear_regression.py', figure='figures/15_icl_linear_regression.png', tests='tests/models/test_icl_lsa.py'),
    Paper('visual_perception_weights', "Visual Perception by Large Language Model's Weights", '2405.20339', 2024, 'multimodal', issues=()),
    Paper('generalization_difficulty', 'Model-agnostic Measure of Generalization Difficulty', '2305.01034', 2023, 'theory', issues=()),
    Paper('quantum_transfer', 'Quantum Transfer Learning for MNIST Classification Using a Hybrid Quantum-Classical Approach', '2408.03351', 2024, 'quantum', issues=()),
    Paper('dense_hebbian', 'Dense Hebbian neural networks: a replica symmetric picture of supervised learning', '2212.00606', 2022, 'theory', issues=()),
    Paper('cabage', 'CaBaGe: Data-Free Model Extraction using ClAss BAlanced Generator Ensemble', '2409.10643', 2024, 'security', issues=()),
    Paper('convs5', 'Convolutional State Space Models for Long-Range Spatiotemporal Modeling', '2310.19694', 2023, 'state space', issues=(5,), module='ref/models/convs5.py', lesson='lessons/10_convs5_moving_square.py', figure='figures/10_convs5_moving_square.png', tests='tests/models/test_convs5_model.py'),
    Paper('maxim', 'MAXIM: Multi-Axis MLP for Image Processing', '2201.02973', 2022, 'vision', issues=()),
    Paper('sortednet', 'SortedNet, a Place for Every Network and Every Network in its Place: Towards a Generalized Solution for Training Many-in-One Neural Networks', '2309.00255', 2023, 'training', issues=()),
    Paper('emo', 'EMO: Earth Mover Distance Optimization for Auto-Regressive Language Modeling', '2310.04691', 2023, 'language modelling', issues=()),
    Paper('quantum_creep', 'Let the Quantum Creep In: Designing Quantum Neural Network Models by Gradually Swapping Out Classical Components', '2409.17583', 2024, 'quantum', issues=()),
    Paper('recoding_latent', 'Recoding latent sentence representations -- Dynamic gradient-based activation modification in RNNs', '2101.00674', 2021, 'recurrent', issues=(6,), module='ref/models/hidden_state_opt.py', lesson='lessons/30_recoding_latent.py', figure='figures/30_recoding_latent.png', tests='tests/models/test_hidden_state_opt.py'),
    Paper('diffusion_hallucinations', 'Understanding Hallucinations in Diffusion Models through Mode Interpolation', '2406.09358', 2024, 'generative', issues=()),
    Paper('mamba', 'Mamba: Linear-Time Sequence Modeling with Selective State Spaces', '2312.00752', 2023, 'state space', issues=(5,), module='ref/models/mamba.py', lesson='lessons/07_mamba_selective_copying.py', figure='figures/07_mamba_selective_copying.png', tests='tests/models/test_mamba.py'),
    Paper('image_text_matching', 'Deep Learning Applied to Image and Text Matching', '1601.03478', 2016, 'multimodal', issues=()),
    Paper('vir', 'ViR: Vision Retention Networks', '2310.19731', 2023, 'linear attention', issues=(4,), module='ref/models/vir.py', lesson='lessons/04_vir_digits.py', figure='figures/04_vir_digits.png', tests='tests/models/test_vir.py'),
    Paper('mom', 'MoM: Linear Sequence Modeling with Mixture-of-Memories', '2502.13685', 2025, 'linear attention', issues=(4,), module='ref/models/mom.py', lesson='lessons/06_mom_recall.py', figure='figures/06_mom_recall.png', tests='tests/models/test_mom.py'),
    Paper('text_vectors', 'Vector representations of text data in deep learning', '1901.01695', 2019, 'representation learning', issues=()),
    Paper('hmt', 'HMT: Hierarchical Memory Transformer for Long Context Language Processing', '2405.06067', 2024, 'memory', issues=(6,), module='ref/models/hmt.py', lesson='lessons/25_hmt.py', figure='figures/25_hmt.png', tests='tests/models/test_hmt.py'),
    Paper('successor_heads', 'Successor Heads: Recurring, Interpretable Attention Heads In The Wild', '2312.09230', 2023, 'interpretability', issues=(3,), module='ref/models/successor_heads.py', lesson='lessons/23_successor_heads.py', figure='figures/23_successor_heads.png', tests='tests/models/test_successor_heads.py'),
    Paper('model_soups', 'Model soups: averaging weights of multiple fine-tuned models improves accuracy without increasing inference time', '2203.05482', 2022, 'training', issues=()),
    Paper('s4', 'Efficiently Modeling Long Sequences with Structured State Spaces', '2111.00396', 2021, 'state space', issues=(5,), module='ref/models/s4.py', lesson='lessons/08_s4_hippo.py', figure='figures/08_s4_hippo.png', tests='tests/models/test_s4_model.py'),
    Paper('wide_deep', 'Wide and Deep Neural Networks Achieve Optimality for Classification', '2204.14126', 2022, 'theory', issues=()),
    Paper('lightnet', 'You Only Scan Once: Efficient Multi-dimension Sequential Modeling with LightNet', '2405.21022', 2024, 'linear attention', issues=(4,), module='ref/models/lightnet.py', lesson='lessons/05_lightnet_2d.py', figure='figures/05_lightnet_2d.png', tests='tests/models/test_lightnet.py'),
    Paper('pv_rnn', 'A Novel Predictive-Coding-Inspired Variational RNN Model for Online Prediction and Recognition', '1811.01339', 2018, 'recurrent', issues=(6,), module='ref/models/pv_rnn.py', lesson='lessons/26_pv_rnn.py', figure='figures/26_pv_rnn.png', tests='tests/models/test_pv_rnn.py'),
    Paper('icl_bayesian_prism', 'In-Context Learning through the Bayesian Prism', '2306.04891', 2023, 'in-context learning', issues=(3,), module='ref/tasks/icl_regression.py', lesson='lessons/15_icl_linear_regression.py', figure='figures/15_icl_linear_regression.png', tests='tests/models/test_icl_lsa.py'),
    Paper('gla', 'Gated Linear Attention Transformers with Hardware-Efficient Training', '2312.06635', 2023, 'linear attention', issues=(4,), module='ref/models/gla.py', lesson='lessons/03_gla_mqar.py', figure='figures/03_gla_mqar.png', tests='tests/models/test_gla_model.py'),
    Paper('hypernetwork_magnitude', 'Magnitude Invariant Parametrizations Improve Hypernetwork Learning', '2304.07645', 2023, 'architectures', issues=()),
    Paper('ar_vision_survey', 'Autoregressive Models in Vision: A Survey', '2411.05902', 2024, 'generative', issues=(), kind="survey"),
    Paper('ml_mamba', 'ML-Mamba: Efficient Multi-Modal Large Language Model Utilizing Mamba-2', '2407.19832', 2024, 'state space', issues=(5,), module='ref/models/mamba2.py', lesson='lessons/09_ssd_duality.py', figure='figures/09_ssd_duality.png', tests='tests/models/test_mamba2.py'),
    Paper('martingale_np', 'Martingale Posterior Neural Processes', '2304.09431', 2023, 'generative', issues=()),
    Paper('llava_kd', 'LLaVA-KD: A Framework of Distilling Multimodal Large Language Models', '2410.16236', 2024, 'multimodal', issues=()),
    Paper('codebook_features', 'Codebook Features: Sparse and Discrete Interpretability for Neural Networks', '2310.17230', 2023, 'interpretability', issues=()),
    Paper('milan_descriptions', 'Natural Language Descriptions of Deep Visual Features', '2201.11114', 2022, 'interpretability', issues=()),
    Paper('convergent_learning', 'Convergent Learning: Do different neural networks learn the same representations?', '1511.07543', 2015, 'representation learning', issues=()),
    Paper('n2n', 'N2N Learning: Network to Network Compression via Policy Gradient Reinforcement Learning', '1709.06030', 2017, 'compression', issues=()),
    Paper('nvlm', 'NVLM: Open Frontier-Class Multimodal LLMs', '2409.11402', 2024, 'multimodal', issues=()),
    Paper('lrcn', 'Long-term Recurrent Convolutional Networks for Visual Recognition and Description', '1411.4389', 2014, 'recurrent', issues=(6,), module='ref/models/lrcn.py', lesson='lessons/29_lrcn.py', figure='figures/29_lrcn.png', tests='tests/models/test_lrcn.py'),
    Paper('mixing_shifting_mlp', 'Mixing and Shifting: Exploiting Global and Local Dependencies in Vision MLPs', '2202.06510', 2022, 'vision', issues=()),
    Paper('scaling_mlps', 'Scaling MLPs: A Tale of Inductive Bias', '2306.13575', 2023, 'vision', issues=()),
    Paper('titans', 'Titans: Learning to Memorize at Test Time', '2501.00663', 2024, 'memory', issues=(6,), module='ref/models/titans.py', lesson='lessons/17_titans_memory.py', figure='figures/17_titans_memory.png', tests='tests/mixers/test_titans.py'),
    Paper('vlm2vec', 'VLM2Vec: Training Vision-Language Models for Massive Multimodal Embedding Tasks', '2410.05160', 2024, 'multimodal', issues=()),
    Paper('moe_survey', 'A Survey on Mixture of Experts', '2407.06204', 2024, 'mixture of experts', issues=(), kind="survey"),
    Paper('vocab_expansion', 'An Empirical Comparison of Vocabulary Expansion and Initialization Approaches for Language Models', '2407.05841', 2024, 'language modelling', issues=()),
    Paper('tcnca', 'TCNCA: Temporal Convolution Network with Chunked Attention for Scalable Sequence Processing', '2312.05605', 2023, 'attention', issues=(3,), module='ref/models/tcnca.py', lesson='lessons/18_tcnca.py', figure='figures/18_tcnca.png', tests='tests/models/test_tcnca.py'),
    Paper('train_longer', 'Train longer, generalize better: closing the generalization gap in large batch training of neural networks', '1705.08741', 2017, 'training', issues=()),
    Paper('fast_slow', 'Fast & Slow Learning: Incorporating Synthetic Gradients in Neural Memory Controllers', '2011.05438', 2020, 'memory', issues=(6,), module='ref/models/synthetic_gradients.py', lesson='lessons/28_fast_slow_synthetic_gradients.py', figure='figures/28_fast_slow_synthetic_gradients.png', tests='tests/models/test_synthetic_gradients.py'),
)

BY_KEY = {p.key: p for p in PAPERS}


def missing_paths(root: Path = ROOT) -> list[str]:
    """Every module, lesson, figure or test path named by a row that does not exist."""
    problems = []
    for p in PAPERS:
        for what in ("module", "lesson", "figure", "tests"):
            path = getattr(p, what)
            if path and not (root / path).exists():
                problems.append(f"{p.key}: {what} {path} does not exist")
    return problems


def _cell(path: str | None) -> str:
    return f"`{path}`" if path else "—"


def markdown_table() -> str:
    """The README's paper table (generated; do not edit the README by hand)."""
    lines = [
        "| # | paper | arXiv | group | issue | module | lesson | figure | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(PAPERS, 1):
        title = p.title.replace("|", "\\|") + (" *(survey)*" if p.kind == "survey" else "")
        issues = ", ".join(f"#{n}" for n in p.issues) or "—"
        lines.append(
            f"| {i} | {title} | [{p.arxiv}]({p.url}) | {p.group} | {issues} | {_cell(p.module)} | "
            f"{_cell(p.lesson)} | {_cell(p.figure)} | {p.status} |"
        )
    counts = {s: sum(p.status == s for p in PAPERS) for s in ("implemented", "partial", "planned")}
    lines.append("")
    lines.append(
        f"{len(PAPERS)} papers: {counts['implemented']} implemented, {counts['partial']} partial, "
        f"{counts['planned']} planned."
    )
    return "\n".join(lines)


def text_table() -> str:
    """A compact terminal table for ``python -m ref papers``."""
    rows = [("#", "key", "arXiv", "year", "group", "issue", "status", "title")]
    for i, p in enumerate(PAPERS, 1):
        issues = ",".join(f"#{n}" for n in p.issues) or "-"
        title = p.title if len(p.title) <= 60 else p.title[:57] + "..."
        rows.append((str(i), p.key, p.arxiv, str(p.year), p.group, issues, p.status, title))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(r[c].ljust(widths[c]) for c in range(len(widths))) + "  " + r[-1] for r in rows)


README_START = "<!-- papers:start (generated by `python -m ref papers --update-readme`) -->"
README_END = "<!-- papers:end -->"


def readme_with_table(readme: str) -> str:
    """``readme`` with the text between the paper-table markers replaced by the current table."""
    if README_START not in readme or README_END not in readme:
        raise ValueError("README.md: expected the paper-table markers, found none")
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{markdown_table()}\n{README_END}{tail}"
